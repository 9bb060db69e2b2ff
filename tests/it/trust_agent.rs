//! The agent under a trust policy: signed commits and artifacts, held releases, rollback and
//! freeze protection, offline re-verification.
