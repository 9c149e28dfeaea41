#!/usr/bin/env Rscript
# Export sandwich::PetersenCL to tests/data/petersen.csv at full precision.
#
#   Rscript tests/data/export_petersen.R [OUTFILE]
#
# Columns firm, year (integers), x, y (doubles written with "%.17g", so they
# round-trip to the identical IEEE doubles in R and Python).
args <- commandArgs(trailingOnly = TRUE)
script_dir <- local({
  f <- sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))
  if (length(f) == 1L) dirname(normalizePath(f)) else getwd()
})
out <- if (length(args) >= 1L) args[[1L]] else file.path(script_dir, "petersen.csv")

data(PetersenCL, package = "sandwich")
d <- PetersenCL
stopifnot(identical(names(d), c("firm", "year", "x", "y")), nrow(d) == 5000L)
lines <- c("firm,year,x,y",
           sprintf("%d,%d,%s,%s", as.integer(d$firm), as.integer(d$year),
                   sprintf("%.17g", d$x), sprintf("%.17g", d$y)))
con <- file(out, open = "wb")   # "\n" line endings on every platform
writeLines(lines, con, sep = "\n")
close(con)

# check the exact round trip
back <- read.csv(out)
stopifnot(identical(back$x, d$x), identical(back$y, d$y),
          identical(back$firm, as.integer(d$firm)),
          identical(back$year, as.integer(d$year)))
cat("wrote", out, "(sandwich", as.character(packageVersion("sandwich")), ")\n")
