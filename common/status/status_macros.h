// RETURN_IF_ERROR and ASSIGN_OR_RETURN for absl::Status / absl::StatusOr.
//
// Debian's Abseil (20220623) predates ABSL_RETURN_IF_ERROR, so the project
// keeps its own two macros with the same meaning:
//
//   RETURN_IF_ERROR(DoThing());              // returns the status if not OK
//   ASSIGN_OR_RETURN(auto value, MakeIt());  // unwraps or returns the status
#ifndef COMMON_STATUS_STATUS_MACROS_H_
#define COMMON_STATUS_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define DD_STATUS_CONCAT_INNER_(a, b) a##b
#define DD_STATUS_CONCAT_(a, b) DD_STATUS_CONCAT_INNER_(a, b)

// Evaluates `expr` (an absl::Status) once and returns it from the enclosing
// function when it is not OK.
#define RETURN_IF_ERROR(expr)                                   \
  do {                                                          \
    ::absl::Status dd_status_ = (expr);                         \
    if (!dd_status_.ok()) return dd_status_;                    \
  } while (false)

// Evaluates `rexpr` (an absl::StatusOr<T>) once; on error returns its status,
// otherwise moves the value into `lhs` (a declaration or an lvalue).
#define ASSIGN_OR_RETURN(lhs, rexpr) \
  DD_ASSIGN_OR_RETURN_IMPL_(DD_STATUS_CONCAT_(dd_statusor_, __LINE__), lhs, rexpr)

#define DD_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                              \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

#endif  // COMMON_STATUS_STATUS_MACROS_H_
