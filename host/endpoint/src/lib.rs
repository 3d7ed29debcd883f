//! The partner endpoint boundary of wharf (see README.md).
