//! The repository boundary of wharf (see README.md).
