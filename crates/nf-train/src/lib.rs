//! Training support.
