//! The site's own key: its identity for everything it signs (audit checkpoints and exports,
//! status files carried back across an air gap). Made at first use under the state dir
//! (`site.key`, `site.pub`); `fleetlet audit site-key` prints its public half for the fleet's
//! site-keys file.

use anyhow::{Context, anyhow};
use fleetlet_verify::cosign::{SigningKey, TrustedKey};
use std::io::Write;
use std::path::Path;

pub const SITE_KEY: &str = "site.key";
pub const SITE_PUB: &str = "site.pub";

/// The site's signing key, made on first use. It is kept in cosign's encrypted format with an
/// empty passphrase: the agent must use it unattended, and the file's mode is what protects it.
pub fn load_or_create(state_dir: &Path) -> anyhow::Result<SigningKey> {
    use std::os::unix::fs::PermissionsExt;
    let path = state_dir.join(SITE_KEY);
    let key = match std::fs::read(&path) {
        Ok(pem) => SigningKey::from_encrypted_pem(&pem, b"")
            .with_context(|| format!("opening the site key {}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(state_dir)
                .with_context(|| format!("creating {}", state_dir.display()))?;
            let key = SigningKey::generate()?;
            let mut tmp = tempfile::NamedTempFile::new_in(state_dir)?;
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o600))?;
            tmp.write_all(key.private_pem(b"")?.as_bytes())?;
            tmp.as_file().sync_all()?;
            // Never over a key another process made meanwhile: theirs wins, and is used.
            match tmp.persist_noclobber(&path) {
                Ok(_) => key,
                Err(_) => {
                    let pem = std::fs::read(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    SigningKey::from_encrypted_pem(&pem, b"")
                        .with_context(|| format!("opening the site key {}", path.display()))?
                }
            }
        }
        Err(e) => return Err(anyhow!("reading {}: {e}", path.display())),
    };
    // The public half, rewritten from the key itself whenever it is missing or differs.
    let public = key.public_pem()?;
    let pub_path = state_dir.join(SITE_PUB);
    if std::fs::read_to_string(&pub_path).ok().as_deref() != Some(public.as_str()) {
        let mut tmp = tempfile::NamedTempFile::new_in(state_dir)?;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
        tmp.write_all(public.as_bytes())?;
        tmp.as_file().sync_all()?;
        tmp.persist(&pub_path)
            .map_err(|e| anyhow!("writing {}: {}", pub_path.display(), e.error))?;
    }
    Ok(key)
}

/// The public half of the site key, if the site has one yet.
pub fn public(state_dir: &Path) -> anyhow::Result<Option<TrustedKey>> {
    let path = state_dir.join(SITE_PUB);
    match std::fs::read(&path) {
        Ok(pem) => Ok(Some(
            TrustedKey::from_pem("site", &pem)
                .with_context(|| format!("reading {}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow!("reading {}: {e}", path.display())),
    }
}
