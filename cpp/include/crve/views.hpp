// Strided, non-owning views of the caller's arrays: X is never copied.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

namespace crve {

using index_t = std::int64_t;

/// Read-only N x K matrix with arbitrary element strides (C order, Fortran order, or slices).
struct MatrixView {
  const double* data = nullptr;
  index_t rows = 0, cols = 0;
  index_t row_stride = 0, col_stride = 0;  // in elements
  double operator()(index_t i, index_t k) const { return data[i * row_stride + k * col_stride]; }
};

/// Read-only strided vector.
struct VectorView {
  const double* data = nullptr;
  index_t size = 0;
  index_t stride = 1;  // in elements
  double operator[](index_t i) const { return data[i * stride]; }
};

/// Error raised for bad input; `code` says what, `index` which column/cluster (-1 if none).
struct InputError : std::runtime_error {
  enum Code { NonFinite, AllZeroColumn, Collinear, TooFewRows, BadCode, Other };
  Code code;
  index_t index;
  InputError(Code c, index_t idx, const std::string& msg) : std::runtime_error(msg), code(c), index(idx) {}
};

}  // namespace crve
