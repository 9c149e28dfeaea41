// Strided, non-owning views of the caller's arrays: X is never copied.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace crve {

using index_t = std::int64_t;

/// Read-only N x K matrix held as K strided columns, each with its own base pointer: C order,
/// Fortran order, slices and separate 1-D arrays (DataFrame columns) are all read in place.
/// A stride of 0 makes a constant column (an intercept without a column of ones in memory).
struct MatrixView {
  std::vector<const double*> col;  // base pointer of each column
  std::vector<index_t> stride;     // element stride of each column
  index_t rows = 0, cols = 0;
  double operator()(index_t i, index_t k) const { return col[k][i * stride[k]]; }

  /// A 2-D array with element strides (row_stride, col_stride).
  static MatrixView strided(const double* data, index_t rows, index_t cols, index_t row_stride, index_t col_stride) {
    MatrixView v;
    v.rows = rows;
    v.cols = cols;
    for (index_t k = 0; k < cols; ++k) {
      v.col.push_back(data + k * col_stride);
      v.stride.push_back(row_stride);
    }
    return v;
  }
  /// True when the columns are one 2-D array: the same row stride and equally spaced bases
  /// (col[k] = col[0] + k * col_stride). Row-wise readers then walk one row pointer.
  bool uniform(index_t& row_stride, index_t& col_stride) const {
    if (cols == 0) return false;
    row_stride = stride[0];
    col_stride = cols > 1 ? col[1] - col[0] : 1;
    for (index_t k = 0; k < cols; ++k)
      if (stride[k] != row_stride || col[k] != col[0] + k * col_stride) return false;
    return row_stride != 0;
  }
  /// Appends a column with `rows` entries at element stride `s`.
  void add_column(const double* data, index_t s) {
    col.push_back(data);
    stride.push_back(s);
    ++cols;
  }
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
