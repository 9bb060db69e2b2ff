//! Signature verification from the command line, against the real registry and independent
//! signers (openssl).
