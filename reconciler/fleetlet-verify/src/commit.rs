//! Commit signatures. Work in progress.
