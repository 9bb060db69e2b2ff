//! Sigstore bundles (keyless). Work in progress.
