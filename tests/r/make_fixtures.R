#!/usr/bin/env Rscript
# Reference values for the crve test suite, computed with R's sandwich,
# clubSandwich and estimatr.
#
#   Rscript tests/r/make_fixtures.R [OUTFILE]
#
# OUTFILE defaults to tests/fixtures/r_reference.json (resolved relative to this
# script's folder, so the script can be run from any working directory).  The
# data sets are read from tests/data/*.csv (relative to this script's folder).
#
# The output is deterministic: no time stamps, no platform strings; every
# double is written with sprintf("%.17g") so it round-trips exactly.
# Non-finite numbers are written as the JSON strings "Inf", "-Inf", "NaN", "NA"
# (e.g. df_denom of the chi-square test is "Inf").
#
# The JSON is written by hand rather than with jsonlite: jsonlite::toJSON
# (1.8.4) caps numbers at 15 significant digits even with digits = NA or
# digits = I(17), which does not round-trip.
#
# Conventions (verified numerically below, see "cross_checks" in the output):
#   crve CV0  = clubSandwich vcovCR(type = "CR0")
#             = sandwich::vcovCL(type = "HC0", cadjust = FALSE)
#             = estimatr lm_robust(se_type = "CR0")                 (no factor)
#   clubSandwich "CR1" = sandwich::vcovCL(type = "HC0", cadjust = TRUE)
#                                                            (factor G/(G-1))
#   crve CV1  = clubSandwich vcovCR(type = "CR1S")
#             = sandwich::vcovCL(type = "HC1", cadjust = TRUE)  (= vcovCL default for lm)
#             = estimatr lm_robust(se_type = "stata")
#                                     (factor G/(G-1) * (N-1)/(N-K), Stata's)
#   crve CV2  = clubSandwich vcovCR(type = "CR2")
#             = sandwich::vcovCL(type = "HC2", cadjust = TRUE)
#             = estimatr lm_robust(se_type = "CR2")
#   clubSandwich "CR3" = sandwich::vcovCL(type = "HC3", cadjust = TRUE)
#                      = sum_g X_g'(I-H_gg)^{-1} e_g e_g'(I-H_gg)^{-1} X_g  sandwiched
#                        (no (G-1)/G factor)
#   crve CV3  = (G-1)/G * clubSandwich CR3
#             = sandwich::vcovCL(type = "HC3", cadjust = FALSE)
#     (sandwich's clustered HC2/HC3 multiply the meat by (G-1)/G internally and
#      cadjust = TRUE multiplies it back by G/(G-1).)
#   crve HC0..HC3 = sandwich::vcovHC(type = "HC0".."HC3")
#                 = estimatr lm_robust(se_type = "HC0".."HC3")
#   crve iid      = vcov(lm) = estimatr lm_robust(se_type = "classical")

suppressPackageStartupMessages({
  library(sandwich)
  library(clubSandwich)
  library(estimatr)
})

args <- commandArgs(trailingOnly = TRUE)
script_dir <- local({
  f <- sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))
  if (length(f) == 1L) dirname(normalizePath(f)) else getwd()
})
data_dir <- normalizePath(file.path(script_dir, "..", "data"), mustWork = TRUE)
out_file <- if (length(args) >= 1L) args[[1L]] else
  file.path(script_dir, "..", "fixtures", "r_reference.json")

expected_versions <- c(clubSandwich = "0.5.8", estimatr = "1.0.0")
for (p in names(expected_versions)) {
  v <- as.character(packageVersion(p))
  if (v != expected_versions[[p]])
    warning(sprintf("%s %s installed; fixtures were designed with %s", p, v,
                    expected_versions[[p]]))
}

## ---------------------------------------------------------------- JSON writer
json_num <- function(x) {
  vapply(x, function(v) {
    if (is.na(v) && !is.nan(v)) return("\"NA\"")
    if (is.nan(v)) return("\"NaN\"")
    if (is.infinite(v)) return(if (v > 0) "\"Inf\"" else "\"-Inf\"")
    if (is.integer(v)) return(sprintf("%d", v))
    sprintf("%.17g", v)
  }, character(1))
}
json_str <- function(x) {
  x <- gsub("\\", "\\\\", x, fixed = TRUE)
  x <- gsub("\"", "\\\"", x, fixed = TRUE)
  x <- gsub("\n", "\\n", x, fixed = TRUE)
  paste0("\"", x, "\"")
}
json_atom <- function(x) {
  if (is.character(x) || is.factor(x)) json_str(as.character(x))
  else if (is.logical(x)) ifelse(is.na(x), "\"NA\"", ifelse(x, "true", "false"))
  else json_num(x)
}
# Atomic vectors of length 1 are scalars unless wrapped in I() (class AsIs);
# arr() marks arrays.  Lists with names are objects, without names arrays.
arr <- function(x) I(unname(x))
mat <- function(m) lapply(seq_len(nrow(m)), function(i) arr(as.numeric(m[i, ])))
to_json <- function(x, indent = 0L) {
  pad <- strrep("  ", indent)
  pad1 <- strrep("  ", indent + 1L)
  if (is.null(x)) return("null")
  if (is.atomic(x)) {
    if (inherits(x, "AsIs") || length(x) != 1L) {
      x <- unclass(x)
      return(paste0("[", paste(json_atom(x), collapse = ", "), "]"))
    }
    return(json_atom(x))
  }
  stopifnot(is.list(x))
  if (!is.null(names(x))) {
    if (length(x) == 0L) return("{}")
    items <- vapply(seq_along(x), function(i)
      paste0(pad1, json_str(names(x)[i]), ": ", to_json(x[[i]], indent + 1L)),
      character(1))
    return(paste0("{\n", paste(items, collapse = ",\n"), "\n", pad, "}"))
  }
  if (length(x) == 0L) return("[]")
  items <- vapply(x, function(v) paste0(pad1, to_json(v, indent + 1L)), character(1))
  paste0("[\n", paste(items, collapse = ",\n"), "\n", pad, "]")
}

## ---------------------------------------------------------------- helpers
vc_entry <- function(V, call) {
  V <- unclass(as.matrix(V))
  list(call = call, cov = mat(V), se = arr(sqrt(diag(V))))
}
rel_diff <- function(A, B) {
  A <- unclass(as.matrix(A)); B <- unclass(as.matrix(B))
  s <- sqrt(outer(diag(B), diag(B)))            # correlation scale
  max(abs(A - B) / s)
}
estimatr_entry <- function(fml, d, se_type, clustered, call) {
  e <- if (clustered) lm_robust(fml, data = d, clusters = cluster_id, se_type = se_type)
       else lm_robust(fml, data = d, se_type = se_type)
  V <- unclass(e$vcov)
  list(call = call, cov = mat(V), se = arr(e$std.error), t = arr(e$statistic),
       df = arr(e$df), p = arr(e$p.value), ci_low = arr(e$conf.low),
       ci_high = arr(e$conf.high), coefficients = arr(e$coefficients))
}
ct_entry <- function(ct, call) {
  nm <- names(ct)
  df_col <- grep("^df", nm, value = TRUE)
  p_col <- grep("^p_", nm, value = TRUE)
  list(call = call, test = sub("^df_", "", df_col), se = arr(ct$SE),
       t = arr(ct$tstat), df = arr(as.numeric(ct[[df_col]])),
       p = arr(ct[[p_col]]))
}
wald_entry <- function(w) {
  out <- list()
  for (i in seq_len(nrow(w))) {
    out[[w$test[i]]] <- list(Fstat = w$Fstat[i], delta = w$delta[i],
                             df_num = as.numeric(w$df_num[i]),
                             df_denom = as.numeric(w$df_denom[i]),
                             p_val = w$p_val[i])
  }
  out
}

## ---------------------------------------------------------------- one case
run_case <- function(name, file, response, regressors, cluster) {
  d <- read.csv(file.path(data_dir, file), stringsAsFactors = FALSE)
  fml <- as.formula(paste(response, "~", paste(regressors, collapse = " + ")))
  fml_str <- paste(response, "~", paste(regressors, collapse = " + "))
  cl <- d[[cluster]]
  d$cluster_id <- cl
  fit <- lm(fml, data = d)
  b <- coef(fit)
  stopifnot(!anyNA(b))
  K <- length(b); N <- nobs(fit); G <- length(unique(cl))
  cnames <- names(b)
  cls <- sprintf("cluster = d$%s", cluster)

  res <- list(name = name, data = file, formula = fml_str, response = response,
              regressors = arr(regressors), cluster = cluster,
              nobs = as.integer(N), n_clusters = as.integer(G), k = as.integer(K),
              coef_names = arr(cnames), coefficients = arr(as.numeric(b)))

  ## ---- cluster-robust covariance matrices
  V <- list(
    sandwich_vcovCL_HC0_cadjustFALSE = vcovCL(fit, cluster = cl, type = "HC0", cadjust = FALSE),
    sandwich_vcovCL_HC0_cadjustTRUE  = vcovCL(fit, cluster = cl, type = "HC0", cadjust = TRUE),
    sandwich_vcovCL_HC1_cadjustTRUE  = vcovCL(fit, cluster = cl, type = "HC1", cadjust = TRUE),
    sandwich_vcovCL_HC1_cadjustFALSE = vcovCL(fit, cluster = cl, type = "HC1", cadjust = FALSE),
    sandwich_vcovCL_HC2_cadjustTRUE  = vcovCL(fit, cluster = cl, type = "HC2", cadjust = TRUE),
    sandwich_vcovCL_HC3_cadjustTRUE  = vcovCL(fit, cluster = cl, type = "HC3", cadjust = TRUE),
    sandwich_vcovCL_HC3_cadjustFALSE = vcovCL(fit, cluster = cl, type = "HC3", cadjust = FALSE)
  )
  calls <- c(
    sandwich_vcovCL_HC0_cadjustFALSE = sprintf("sandwich::vcovCL(fit, %s, type = \"HC0\", cadjust = FALSE)", cls),
    sandwich_vcovCL_HC0_cadjustTRUE  = sprintf("sandwich::vcovCL(fit, %s, type = \"HC0\", cadjust = TRUE)", cls),
    sandwich_vcovCL_HC1_cadjustTRUE  = sprintf("sandwich::vcovCL(fit, %s, type = \"HC1\", cadjust = TRUE)", cls),
    sandwich_vcovCL_HC1_cadjustFALSE = sprintf("sandwich::vcovCL(fit, %s, type = \"HC1\", cadjust = FALSE)", cls),
    sandwich_vcovCL_HC2_cadjustTRUE  = sprintf("sandwich::vcovCL(fit, %s, type = \"HC2\", cadjust = TRUE)", cls),
    sandwich_vcovCL_HC3_cadjustTRUE  = sprintf("sandwich::vcovCL(fit, %s, type = \"HC3\", cadjust = TRUE)", cls),
    sandwich_vcovCL_HC3_cadjustFALSE = sprintf("sandwich::vcovCL(fit, %s, type = \"HC3\", cadjust = FALSE)", cls)
  )
  for (type in c("CR0", "CR1", "CR1S", "CR2", "CR3")) {
    key <- paste0("clubSandwich_", type)
    V[[key]] <- vcovCR(fit, cluster = cl, type = type)
    calls[[key]] <- sprintf("clubSandwich::vcovCR(fit, %s, type = \"%s\")", cls, type)
  }
  res$vcov <- lapply(setNames(names(V), names(V)), function(k) vc_entry(V[[k]], calls[[k]]))

  ## ---- estimatr (clustered)
  res$estimatr <- list()
  for (st in c("CR0", "stata", "CR2")) {
    res$estimatr[[st]] <- estimatr_entry(
      fml, d, st, TRUE,
      sprintf("estimatr::lm_robust(%s, data = d, clusters = %s, se_type = \"%s\")",
              fml_str, cluster, st))
  }

  ## ---- clubSandwich coef_test
  res$coef_test <- list()
  for (type in c("CR0", "CR1", "CR1S", "CR2", "CR3")) {
    for (test in c("Satterthwaite", "naive-t")) {
      ct <- coef_test(fit, vcov = type, cluster = cl, test = test)
      key <- paste0(type, "_", test)
      res$coef_test[[key]] <- ct_entry(
        ct, sprintf("clubSandwich::coef_test(fit, vcov = \"%s\", %s, test = \"%s\")",
                    type, cls, test))
    }
  }

  ## ---- crve-convention CV3 values derived in R (CV3 = (G-1)/G * CR3)
  V3 <- (G - 1) / G * unclass(V$clubSandwich_CR3)
  se3 <- sqrt(diag(V3)); t3 <- as.numeric(b) / se3
  res$derived <- list(
    note = paste("crve-convention values computed in R from the package output:",
                 "CV3 = (G-1)/G * clubSandwich CR3; t = b/se;",
                 "p = 2*pt(-|t|, G-1) for dof G-1, 2*pnorm(-|t|) for dof normal"),
    CV3_G1 = list(cov = mat(V3), se = arr(se3), t = arr(t3), df = arr(rep(G - 1, K)),
                  p = arr(2 * pt(-abs(t3), df = G - 1))),
    CV1_normal = local({
      V1 <- unclass(V$clubSandwich_CR1S); s <- sqrt(diag(V1)); tt <- as.numeric(b) / s
      list(se = arr(s), t = arr(tt), p = arr(2 * pnorm(-abs(tt))))
    })
  )

  ## ---- Wald tests
  # constraint sets: all slopes = 0; a 2-restriction subset; a general contrast;
  # the subset again with a non-zero right-hand side r.
  Cs <- list()
  Cs$slopes <- constrain_zero(2:K, coefs = b)
  Cs$pair <- if (K >= 3) constrain_zero(2:3, coefs = b) else constrain_zero(1:2, coefs = b)
  Cs$contrast <- if (K >= 3) {
    rbind(c(0, 1, -1, rep(0, K - 3)),
          seq(1, by = -0.5, length.out = K))
  } else {
    matrix(c(1, -2), nrow = 1)
  }
  # Non-zero r: clubSandwich tests C beta = 0 only, so C beta = r is obtained by
  # refitting with y* = y - X b0 (r = C b0): residuals, vcov and the HTZ
  # adjustment are unchanged and the coefficients shift by -b0.
  b0 <- 0.5 * as.numeric(b)
  X <- model.matrix(fit)
  d_shift <- d
  d_shift[[response]] <- d[[response]] - as.numeric(X %*% b0)
  fit_shift <- lm(fml, data = d_shift)

  res$wald <- list()
  for (cname in c("slopes", "pair", "contrast", "pair_r")) {
    Cm <- if (cname == "pair_r") Cs$pair else Cs[[cname]]
    Cm <- unname(as.matrix(Cm)); storage.mode(Cm) <- "double"
    f_use <- if (cname == "pair_r") fit_shift else fit
    rvec <- if (cname == "pair_r") as.numeric(Cm %*% b0) else rep(0, nrow(Cm))
    q <- nrow(Cm)
    entry <- list(name = cname, q = as.integer(q), R = mat(Cm), r = arr(rvec),
                  fit = if (cname == "pair_r")
                    "lm on y - X %*% b0 with b0 = 0.5 * coef(fit); r = R %*% b0" else "fit")
    entry$results <- list()
    for (type in c("CR0", "CR1S", "CR2", "CR3")) {
      tests <- if (type == "CR2") c("HTZ", "Naive-F", "chi-sq") else c("Naive-F", "chi-sq")
      w <- Wald_test(f_use, constraints = Cm, vcov = type, cluster = cl, test = tests,
                     tidy = TRUE)
      entry$results[[type]] <- wald_entry(w)
      entry$results[[type]]$call <- sprintf(
        "clubSandwich::Wald_test(fit, constraints = R, vcov = \"%s\", %s, test = c(%s), tidy = TRUE)",
        type, cls, paste0("\"", tests, "\"", collapse = ", "))
    }
    # crve-convention CV3 (derived): Q scales by G/(G-1) relative to CR3
    Q3 <- q * entry$results$CR3[["chi-sq"]]$Fstat * G / (G - 1)
    entry$results$CV3_derived <- list(
      Q = Q3, F = Q3 / q, df_num = q, df_denom = G - 1,
      p_F = pf(Q3 / q, q, G - 1, lower.tail = FALSE),
      p_chi2 = pchisq(Q3, q, lower.tail = FALSE),
      note = "Q = q * Fstat(CR3 chi-sq) * G/(G-1); F = Q/q ~ F(q, G-1); Q ~ chi2(q)")
    res$wald[[length(res$wald) + 1L]] <- entry
  }

  ## ---- heteroskedasticity-robust (no clustering) and classical
  res$hc <- list()
  Vi <- vcov(fit)
  res$hc$lm_vcov <- c(vc_entry(Vi, "vcov(fit)"), list(df = arr(rep(N - K, K))))
  for (type in c("HC0", "HC1", "HC2", "HC3")) {
    res$hc[[paste0("sandwich_vcovHC_", type)]] <-
      vc_entry(vcovHC(fit, type = type), sprintf("sandwich::vcovHC(fit, type = \"%s\")", type))
  }
  for (st in c("classical", "HC0", "HC1", "HC2", "HC3")) {
    res$hc[[paste0("estimatr_", st)]] <- estimatr_entry(
      fml, d, st, FALSE,
      sprintf("estimatr::lm_robust(%s, data = d, se_type = \"%s\")", fml_str, st))
  }

  ## ---- cross checks (max |A-B| / sqrt(B_ii B_jj))
  est <- function(st) {
    e <- lm_robust(fml, data = d, clusters = cluster_id, se_type = st); e$vcov
  }
  esth <- function(st) lm_robust(fml, data = d, se_type = st)$vcov
  cs <- V
  fac1 <- G / (G - 1) * (N - 1) / (N - K)
  checks <- list(
    CV0_sandwichHC0noadj_vs_CR0 = rel_diff(cs$sandwich_vcovCL_HC0_cadjustFALSE, cs$clubSandwich_CR0),
    CV0_estimatrCR0_vs_CR0 = rel_diff(est("CR0"), cs$clubSandwich_CR0),
    CR1_sandwichHC0adj_vs_CR1 = rel_diff(cs$sandwich_vcovCL_HC0_cadjustTRUE, cs$clubSandwich_CR1),
    CV1_sandwichHC1adj_vs_CR1S = rel_diff(cs$sandwich_vcovCL_HC1_cadjustTRUE, cs$clubSandwich_CR1S),
    CV1_estimatrStata_vs_CR1S = rel_diff(est("stata"), cs$clubSandwich_CR1S),
    CV1_factor_times_CR0_vs_CR1S = rel_diff(fac1 * cs$clubSandwich_CR0, cs$clubSandwich_CR1S),
    CV2_sandwichHC2adj_vs_CR2 = rel_diff(cs$sandwich_vcovCL_HC2_cadjustTRUE, cs$clubSandwich_CR2),
    CV2_estimatrCR2_vs_CR2 = rel_diff(est("CR2"), cs$clubSandwich_CR2),
    CR3_sandwichHC3adj_vs_CR3 = rel_diff(cs$sandwich_vcovCL_HC3_cadjustTRUE, cs$clubSandwich_CR3),
    CV3_sandwichHC3noadj_vs_G1overG_CR3 = rel_diff(cs$sandwich_vcovCL_HC3_cadjustFALSE,
                                                   (G - 1) / G * cs$clubSandwich_CR3),
    CV2_df_estimatr_vs_clubSandwich = max(abs(
      lm_robust(fml, data = d, clusters = cluster_id, se_type = "CR2")$df -
        res$coef_test$CR2_Satterthwaite$df)),
    HC0_estimatr_vs_sandwich = rel_diff(esth("HC0"), vcovHC(fit, type = "HC0")),
    HC1_estimatr_vs_sandwich = rel_diff(esth("HC1"), vcovHC(fit, type = "HC1")),
    HC2_estimatr_vs_sandwich = rel_diff(esth("HC2"), vcovHC(fit, type = "HC2")),
    HC3_estimatr_vs_sandwich = rel_diff(esth("HC3"), vcovHC(fit, type = "HC3")),
    iid_estimatr_vs_lm = rel_diff(esth("classical"), Vi)
  )
  bad <- names(checks)[unlist(checks) > 1e-10]
  if (length(bad))
    stop(sprintf("case %s: convention cross-checks failed: %s", name,
                 paste(sprintf("%s=%g", bad, unlist(checks[bad])), collapse = ", ")))
  res$cross_checks <- checks
  res
}

cases <- list(
  list("petersen_firm", "petersen.csv", "y", c("x"), "firm"),
  list("petersen_year", "petersen.csv", "y", c("x"), "year"),
  list("grunfeld_firm", "grunfeld.csv", "invest", c("value", "capital"), "firm"),
  list("synth_unequal", "synth_unequal.csv", "y", c("x1", "x2", "x3"), "g"),
  list("synth_few", "synth_few.csv", "y", c("x1", "x2"), "g"),
  list("synth_hetero", "synth_hetero.csv", "y", c("x1", "x2", "x3", "x4"), "g")
)

results <- lapply(cases, function(cs) {
  message("case ", cs[[1]])
  do.call(run_case, cs)
})

out <- list(
  meta = list(
    generated_by = "tests/r/make_fixtures.R",
    R_version = R.version.string,
    packages = list(sandwich = as.character(packageVersion("sandwich")),
                    clubSandwich = as.character(packageVersion("clubSandwich")),
                    estimatr = as.character(packageVersion("estimatr"))),
    number_format = "doubles written with %.17g; non-finite as strings \"Inf\", \"-Inf\", \"NaN\", \"NA\"",
    matrices = "row-major lists of rows; coefficient order = coef_names (intercept first, then regressors in formula order)",
    conventions = list(
      CV0 = "clubSandwich CR0 = sandwich::vcovCL(type='HC0', cadjust=FALSE) = estimatr 'CR0'",
      CV1 = "clubSandwich CR1S = sandwich::vcovCL(type='HC1', cadjust=TRUE) = estimatr 'stata'; factor G/(G-1)*(N-1)/(N-K)",
      CR1 = "clubSandwich CR1 = sandwich::vcovCL(type='HC0', cadjust=TRUE); factor G/(G-1)",
      CV2 = "clubSandwich CR2 = sandwich::vcovCL(type='HC2', cadjust=TRUE) = estimatr 'CR2'",
      CV3 = "(G-1)/G * clubSandwich CR3 = sandwich::vcovCL(type='HC3', cadjust=FALSE); clubSandwich CR3 = vcovCL(type='HC3', cadjust=TRUE)",
      HC = "sandwich::vcovHC(type) = estimatr se_type (HC0..HC3); iid = vcov(lm) = estimatr 'classical'",
      wald = "clubSandwich Wald_test: Fstat = Q/q for 'chi-sq' and 'Naive-F' (Q = Wald quadratic form), Naive-F df_denom = G-1; HTZ Fstat = delta*Q/q"
    )
  ),
  cases = results
)

dir.create(dirname(out_file), recursive = TRUE, showWarnings = FALSE)
con <- file(out_file, open = "wb")
writeLines(to_json(out), con, sep = "\n")
close(con)
message("wrote ", normalizePath(out_file))
