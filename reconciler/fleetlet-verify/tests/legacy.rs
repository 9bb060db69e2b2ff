//! cosign legacy signature layers (keyless certificate + chain + Rekor bundle annotations, and
//! key-based layers with a Rekor bundle), against a world built here: a Fulcio-like CA
//! (P-384 root) issuing code-signing leaves with the OIDC issuer extensions, a Rekor-like log
//! key (P-256) in a test `trusted_root.json`, hashedrekord bodies and SETs signed here.
//!
//! Every rejected case starts from the world that verifies and changes one thing (re-signing
//! the SET where needed), so exactly the check named in the test must catch it.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use const_oid::{AssociatedOid, ObjectIdentifier};
use der::Encode as _;
use der::asn1::{Ia5String, OctetString, Utf8StringRef};
use fleetlet_verify::keyless::{KeylessError, KeylessIdentity, TrustedRoot};
use fleetlet_verify::legacy::{
    BUNDLE_ANNOTATION, CERTIFICATE_ANNOTATION, CHAIN_ANNOTATION, LegacyError, LegacyMaterial,
    LegacySigner, parse_layer_annotations, verify_key_tlog, verify_keyless_layer,
};
use p256::ecdsa::signature::Signer as _;
use p256::pkcs8::EncodePublicKey as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder as _, CertificateBuilder};
use x509_cert::certificate::TbsCertificate;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName,
};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{SubjectPublicKeyInfo, SubjectPublicKeyInfoRef};
use x509_cert::time::{Time, Validity};

const EMAIL: &str = "signer@example.com";
const URI: &str = "https://ci.example.com/workflows/release.yml@refs/heads/main";
const ISSUER: &str = "https://issuer.example.com";
const CA_NAME: &str = "O=fleetlet test,CN=test fulcio";
/// Leaf issuance: 2025-06-15T15:06:40Z; the leaf is valid for ten minutes.
const ISSUED: i64 = 1_750_000_000;
const LEAF_LIFETIME: i64 = 600;
const SIGNED_AT: i64 = ISSUED + 60;
const LOG_INDEX: i64 = 123_456_789;
const ARTIFACT: &str = "sha256:4b3d1f5a0cf9d5a1f1bd0f2c4d0e7e0e7bd0e8d52f1c5c1a2ad2f4c0e8a1b2c3";

const OID_ISSUER_V1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.1");
const OID_ISSUER_V2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.8");
const OID_KP_CODE_SIGNING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.3");

// ---------------------------------------------------------------------------------------------
// Certificates

/// A profile that issues exactly the given extensions under the given names.
struct Profile {
    issuer: Name,
    subject: Name,
    extensions: Vec<Extension>,
}

impl BuilderProfile for Profile {
    fn get_issuer(&self, _: &Name) -> Name {
        self.issuer.clone()
    }
    fn get_subject(&self) -> Name {
        self.subject.clone()
    }
    fn build_extensions(
        &self,
        _: SubjectPublicKeyInfoRef<'_>,
        _: SubjectPublicKeyInfoRef<'_>,
        _: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        Ok(self.extensions.clone())
    }
}

fn ext<T: AssociatedOid + der::Encode>(value: &T, critical: bool) -> Extension {
    raw_ext(T::OID, value.to_der().expect("encode"), critical)
}

fn raw_ext(oid: ObjectIdentifier, value: Vec<u8>, critical: bool) -> Extension {
    Extension {
        extn_id: oid,
        critical,
        extn_value: OctetString::new(value).expect("octets"),
    }
}

fn time(t: i64) -> Time {
    Time::try_from(UNIX_EPOCH + Duration::from_secs(t as u64)).expect("time")
}

fn name(s: &str) -> Name {
    s.parse().expect("name")
}

/// A CA: P-384 key, certificate DER.
struct Ca {
    key: p384::ecdsa::SigningKey,
    der: Vec<u8>,
    name: Name,
}

fn ca_extensions() -> Vec<Extension> {
    vec![
        ext(
            &BasicConstraints {
                ca: true,
                path_len_constraint: None,
            },
            true,
        ),
        ext(&KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign), true),
    ]
}

/// A self-signed root named `subject`, key from `seed`.
fn root_ca(seed: u8, subject: &str) -> Ca {
    let key = p384::ecdsa::SigningKey::from_slice(&[seed; 48]).expect("scalar");
    let profile = Profile {
        issuer: name(subject),
        subject: name(subject),
        extensions: ca_extensions(),
    };
    let cert = CertificateBuilder::new(
        profile,
        SerialNumber::from(u32::from(seed)),
        Validity::new(time(ISSUED - 86_400 * 365), time(ISSUED + 86_400 * 3650)),
        SubjectPublicKeyInfo::from_key(key.verifying_key()).expect("spki"),
    )
    .expect("builder")
    .build::<_, p384::ecdsa::DerSignature>(&key)
    .expect("root certificate");
    Ca {
        key,
        der: cert.to_der().expect("der"),
        name: name(subject),
    }
}

/// An intermediate CA named `subject` issued by `parent`.
fn intermediate_ca(parent: &Ca, seed: u8, subject: &str) -> Ca {
    issued_ca(
        parent,
        seed,
        subject,
        ca_extensions(),
        (ISSUED - 86_400, ISSUED + 86_400 * 365),
    )
}

/// A certificate for a P-384 key named `subject`, issued by `parent` with exactly
/// `extensions`, valid `validity`: an intermediate CA, or something posing as one.
fn issued_ca(
    parent: &Ca,
    seed: u8,
    subject: &str,
    extensions: Vec<Extension>,
    validity: (i64, i64),
) -> Ca {
    let key = p384::ecdsa::SigningKey::from_slice(&[seed; 48]).expect("scalar");
    let profile = Profile {
        issuer: parent.name.clone(),
        subject: name(subject),
        extensions,
    };
    let cert = CertificateBuilder::new(
        profile,
        SerialNumber::from(u32::from(seed)),
        Validity::new(time(validity.0), time(validity.1)),
        SubjectPublicKeyInfo::from_key(key.verifying_key()).expect("spki"),
    )
    .expect("builder")
    .build::<_, p384::ecdsa::DerSignature>(&parent.key)
    .expect("intermediate certificate");
    Ca {
        key,
        der: cert.to_der().expect("der"),
        name: name(subject),
    }
}

/// A Fulcio-like leaf for `key`, issued by `ca`: code signing, SAN email + URI, OIDC issuer
/// in both extensions, valid `not_before..not_before + LEAF_LIFETIME`.
fn leaf_cert(ca: &Ca, key: &p256::ecdsa::SigningKey, not_before: i64, issuer: &str) -> Vec<u8> {
    leaf_cert_for(ca, key, not_before, issuer, OID_KP_CODE_SIGNING)
}

/// [`leaf_cert`] with another extended key usage.
fn leaf_cert_for(
    ca: &Ca,
    key: &p256::ecdsa::SigningKey,
    not_before: i64,
    issuer: &str,
    eku: ObjectIdentifier,
) -> Vec<u8> {
    let san = SubjectAltName(vec![
        GeneralName::Rfc822Name(Ia5String::new(EMAIL).expect("ia5")),
        GeneralName::UniformResourceIdentifier(Ia5String::new(URI).expect("ia5")),
    ]);
    let profile = Profile {
        issuer: ca.name.clone(),
        subject: Name::default(),
        extensions: vec![
            ext(&KeyUsage(KeyUsages::DigitalSignature.into()), true),
            ext(&ExtendedKeyUsage(vec![eku]), false),
            ext(
                &BasicConstraints {
                    ca: false,
                    path_len_constraint: None,
                },
                true,
            ),
            ext(&san, true),
            raw_ext(OID_ISSUER_V1, issuer.as_bytes().to_vec(), false),
            raw_ext(
                OID_ISSUER_V2,
                Utf8StringRef::new(issuer)
                    .expect("utf8")
                    .to_der()
                    .expect("der"),
                false,
            ),
        ],
    };
    CertificateBuilder::new(
        profile,
        SerialNumber::from(0x1eafu32),
        Validity::new(time(not_before), time(not_before + LEAF_LIFETIME)),
        SubjectPublicKeyInfo::from_key(key.verifying_key()).expect("spki"),
    )
    .expect("builder")
    .build::<_, p384::ecdsa::DerSignature>(&ca.key)
    .expect("leaf certificate")
    .to_der()
    .expect("der")
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("ascii"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

// ---------------------------------------------------------------------------------------------
// Trusted root and Rekor

fn rekor_key() -> p256::ecdsa::SigningKey {
    p256::ecdsa::SigningKey::from_slice(&[0x42; 32]).expect("scalar")
}

fn spki_der(key: &p256::ecdsa::SigningKey) -> Vec<u8> {
    key.verifying_key()
        .to_public_key_der()
        .expect("spki")
        .as_bytes()
        .to_vec()
}

fn sign(key: &p256::ecdsa::SigningKey, msg: &[u8]) -> Vec<u8> {
    let sig: p256::ecdsa::DerSignature = key.sign(msg);
    sig.as_bytes().to_vec()
}

/// A trusted_root.json (the public-good format) with the test Rekor key (valid from
/// `rekor_from`) and one Fulcio CA per given chain.
fn trusted_root(rekor_from: &str, cas: &[&[&Ca]]) -> TrustedRoot {
    let rekor_spki = spki_der(&rekor_key());
    let json = json!({
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": [{
            "baseUrl": "https://rekor.example.com",
            "hashAlgorithm": "SHA2_256",
            "publicKey": {
                "rawBytes": B64.encode(&rekor_spki),
                "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                "validFor": {"start": rekor_from}
            },
            "logId": {"keyId": B64.encode(Sha256::digest(&rekor_spki))}
        }],
        "certificateAuthorities": cas.iter().map(|chain| json!({
            "subject": {"organization": "fleetlet test", "commonName": "test fulcio"},
            "uri": "https://fulcio.example.com",
            "certChain": {"certificates": chain.iter().map(|ca| json!({
                "rawBytes": B64.encode(&ca.der)
            })).collect::<Vec<_>>()},
            "validFor": {"start": "2024-01-01T00:00:00Z"}
        })).collect::<Vec<_>>(),
        "ctlogs": [],
        "timestampAuthorities": []
    });
    TrustedRoot::from_json(&serde_json::to_vec(&json).expect("json")).expect("trusted root")
}

// ---------------------------------------------------------------------------------------------
// The world

/// One legacy signature layer and everything needed to verify it. Tests edit the fields;
/// [`World::annotations`] signs the SET over whatever the fields say now.
struct World {
    payload: Vec<u8>,
    signature: Vec<u8>,
    /// The leaf certificate (keyless) — `None` for key-based layers.
    leaf_der: Option<Vec<u8>>,
    chain_pem: Option<String>,
    /// The signing key's SPKI (key-based layers).
    signer_spki: Vec<u8>,
    root: TrustedRoot,
    /// hashedrekord body.
    body: Value,
    integrated_time: i64,
    log_id: String,
    /// Who signs the SET.
    set_key: p256::ecdsa::SigningKey,
}

fn leaf_key() -> p256::ecdsa::SigningKey {
    p256::ecdsa::SigningKey::from_slice(&[0x17; 32]).expect("scalar")
}

fn payload() -> Vec<u8> {
    fleetlet_verify::cosign::simple_signing_payload(
        "registry.example.com/fleet/app",
        &ARTIFACT.parse().expect("digest"),
        &BTreeMap::new(),
    )
}

fn hashedrekord(payload: &[u8], signature: &[u8], verifier_pem: &str) -> Value {
    json!({
        "apiVersion": "0.0.1",
        "kind": "hashedrekord",
        "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(payload))}},
            "signature": {
                "content": B64.encode(signature),
                "publicKey": {"content": B64.encode(verifier_pem)}
            }
        }
    })
}

impl World {
    /// A keyless signature by a leaf issued by `issuing` (with `chain` in the chain
    /// annotation), against a trusted root holding `trusted` CA chains.
    fn keyless_with(issuing: &Ca, chain: &[&Ca], trusted: &[&[&Ca]]) -> Self {
        let key = leaf_key();
        let leaf_der = leaf_cert(issuing, &key, ISSUED, ISSUER);
        let payload = payload();
        let signature = sign(&key, &payload);
        let body = hashedrekord(&payload, &signature, &pem("CERTIFICATE", &leaf_der));
        World {
            chain_pem: Some(chain.iter().map(|c| pem("CERTIFICATE", &c.der)).collect()),
            payload,
            signature,
            leaf_der: Some(leaf_der),
            signer_spki: Vec::new(),
            root: trusted_root("2024-01-01T00:00:00Z", trusted),
            body,
            integrated_time: SIGNED_AT,
            log_id: hex::encode(Sha256::digest(spki_der(&rekor_key()))),
            set_key: rekor_key(),
        }
    }

    /// The good keyless signature: leaf issued by the trusted test root.
    fn keyless() -> Self {
        let ca = root_ca(0x31, CA_NAME);
        Self::keyless_with(&ca, &[&ca], &[&[&ca]])
    }

    /// A key-based signature (cosign `--key`) uploaded to Rekor.
    fn key_based() -> Self {
        let key = p256::ecdsa::SigningKey::from_slice(&[0x23; 32]).expect("scalar");
        let signer_spki = spki_der(&key);
        let payload = payload();
        let signature = sign(&key, &payload);
        let body = hashedrekord(&payload, &signature, &pem("PUBLIC KEY", &signer_spki));
        World {
            payload,
            signature,
            leaf_der: None,
            chain_pem: None,
            signer_spki,
            root: trusted_root("2024-01-01T00:00:00Z", &[]),
            body,
            integrated_time: SIGNED_AT,
            log_id: hex::encode(Sha256::digest(spki_der(&rekor_key()))),
            set_key: rekor_key(),
        }
    }

    fn body_b64(&self) -> String {
        B64.encode(serde_json::to_vec(&self.body).expect("body"))
    }

    /// The cosign bundle annotation, its SET signed now by `set_key`.
    fn rekor_bundle(&self) -> String {
        let set_payload = format!(
            r#"{{"body":"{}","integratedTime":{},"logID":"{}","logIndex":{}}}"#,
            self.body_b64(),
            self.integrated_time,
            self.log_id,
            LOG_INDEX
        );
        json!({
            "SignedEntryTimestamp": B64.encode(sign(&self.set_key, set_payload.as_bytes())),
            "Payload": {
                "body": self.body_b64(),
                "integratedTime": self.integrated_time,
                "logIndex": LOG_INDEX,
                "logID": self.log_id,
            }
        })
        .to_string()
    }

    fn annotations(&self) -> BTreeMap<String, String> {
        let mut a = BTreeMap::new();
        a.insert(
            "dev.cosignproject.cosign/signature".to_string(),
            B64.encode(&self.signature),
        );
        if let Some(leaf) = &self.leaf_der {
            a.insert(CERTIFICATE_ANNOTATION.into(), pem("CERTIFICATE", leaf));
        }
        if let Some(chain) = &self.chain_pem {
            a.insert(CHAIN_ANNOTATION.into(), chain.clone());
        }
        a.insert(BUNDLE_ANNOTATION.into(), self.rekor_bundle());
        a
    }

    fn material(&self) -> LegacyMaterial {
        parse_layer_annotations(&self.annotations()).expect("annotations parse")
    }

    fn verify_as(&self, identities: &[KeylessIdentity]) -> Result<LegacySigner, LegacyError> {
        verify_keyless_layer(
            &self.payload,
            &self.signature,
            &self.material(),
            &self.root,
            identities,
        )
    }

    fn verify(&self) -> Result<LegacySigner, LegacyError> {
        self.verify_as(&identity())
    }

    fn verify_key(&self) -> Result<u64, LegacyError> {
        verify_key_tlog(
            &self.payload,
            &self.signature,
            &self.signer_spki,
            &self.material(),
            &self.root,
        )
    }
}

fn identity() -> Vec<KeylessIdentity> {
    vec![KeylessIdentity::new(ISSUER, Some(EMAIL), None).expect("identity")]
}

fn keyless_err(r: Result<LegacySigner, LegacyError>) -> KeylessError {
    match r {
        Err(LegacyError::Keyless(e)) => e,
        other => panic!("expected a keyless check to fail, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Keyless

#[test]
fn good_keyless_layer_verifies() {
    let signer = World::keyless().verify().expect("verifies");
    assert_eq!(
        signer,
        LegacySigner {
            issuer: ISSUER.into(),
            subject: EMAIL.into(),
            log_index: LOG_INDEX as u64,
            integrated_time: SIGNED_AT,
        }
    );
    // The URI SAN is an identity too, and any allowed identity suffices.
    let ids = vec![
        KeylessIdentity::new("https://other.example.com", Some(EMAIL), None).expect("id"),
        KeylessIdentity::new(ISSUER, None, Some(r"^https://ci\.example\.com/")).expect("id"),
    ];
    assert_eq!(
        World::keyless().verify_as(&ids).expect("verifies").subject,
        URI
    );
}

#[test]
fn material_is_parsed_from_the_annotations() {
    let w = World::keyless();
    let m = w.material();
    assert!(m.is_keyless());
    assert_eq!(m.certificate(), w.leaf_der.as_deref());
    assert_eq!(m.chain().len(), 1);
    let b = m.rekor_bundle().expect("bundle");
    assert_eq!(b.log_index(), LOG_INDEX as u64);
    assert_eq!(b.integrated_time(), SIGNED_AT);
    assert_eq!(b.body(), serde_json::to_vec(&w.body).expect("body"));
    // Empty annotations count as absent, as cosign reads them.
    let mut a = w.annotations();
    a.insert(CHAIN_ANNOTATION.into(), String::new());
    assert!(
        parse_layer_annotations(&a)
            .expect("parses")
            .chain()
            .is_empty()
    );
    // Key-based: a bundle, no certificate.
    let k = World::key_based().material();
    assert!(!k.is_keyless() && k.rekor_bundle().is_some());
}

#[test]
fn wrong_identity_is_rejected() {
    let ids = vec![KeylessIdentity::new(ISSUER, Some("mallory@example.com"), None).expect("id")];
    match keyless_err(World::keyless().verify_as(&ids)) {
        KeylessError::SubjectMismatch { found, .. } => assert!(found.contains(EMAIL), "{found}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn wrong_issuer_is_rejected() {
    let ids =
        vec![KeylessIdentity::new("https://accounts.example.org", Some(EMAIL), None).expect("id")];
    match keyless_err(World::keyless().verify_as(&ids)) {
        KeylessError::IssuerMismatch { found, .. } => assert!(found.contains(ISSUER), "{found}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn no_allowed_identity_is_rejected() {
    assert!(matches!(
        keyless_err(World::keyless().verify_as(&[])),
        KeylessError::InvalidIdentity(_)
    ));
}

#[test]
fn certificate_without_code_signing_usage_is_rejected() {
    let mut w = World::keyless();
    let server_auth = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1");
    let leaf = leaf_cert_for(
        &root_ca(0x31, CA_NAME),
        &leaf_key(),
        ISSUED,
        ISSUER,
        server_auth,
    );
    w.body["spec"]["signature"]["publicKey"]["content"] =
        B64.encode(pem("CERTIFICATE", &leaf)).into();
    w.leaf_der = Some(leaf);
    assert!(matches!(
        keyless_err(w.verify()),
        KeylessError::NotCodeSigning(_)
    ));
}

#[test]
fn certificate_of_another_ca_is_rejected() {
    // Same name as the trusted CA, different key: only the signature check can tell.
    let trusted = root_ca(0x31, CA_NAME);
    let impostor = root_ca(0x32, CA_NAME);
    let w = World::keyless_with(&impostor, &[&impostor], &[&[&trusted]]);
    match keyless_err(w.verify()) {
        KeylessError::CertificateChain(e) => assert!(e.contains("does not verify"), "{e}"),
        other => panic!("{other:?}"),
    }
    // A differently named CA is simply no issuer.
    let other = root_ca(0x33, "O=elsewhere,CN=other ca");
    let w = World::keyless_with(&other, &[&other], &[&[&trusted]]);
    assert!(matches!(
        keyless_err(w.verify()),
        KeylessError::CertificateChain(_)
    ));
}

#[test]
fn chain_annotation_intermediates_are_used_but_not_trusted() {
    let root = root_ca(0x31, CA_NAME);
    let inter = intermediate_ca(&root, 0x41, "O=fleetlet test,CN=test fulcio intermediate");
    // The trusted root holds only the root; the intermediate comes from the annotation.
    let w = World::keyless_with(&inter, &[&inter, &root], &[&[&root]]);
    w.verify()
        .expect("verifies through the annotated intermediate");
    // Without the annotation the leaf does not chain.
    let mut w = World::keyless_with(&inter, &[&inter, &root], &[&[&root]]);
    w.chain_pem = None;
    assert!(matches!(
        keyless_err(w.verify()),
        KeylessError::CertificateChain(_)
    ));
    // An intermediate the trusted root does not vouch for is not an anchor.
    let rogue = root_ca(0x34, "O=rogue,CN=rogue");
    let rogue_inter = intermediate_ca(&rogue, 0x42, "O=fleetlet test,CN=test fulcio intermediate");
    let w = World::keyless_with(&rogue_inter, &[&rogue_inter, &rogue], &[&[&root]]);
    assert!(matches!(
        keyless_err(w.verify()),
        KeylessError::CertificateChain(_)
    ));
}

/// The chain annotation's certificates must be CAs, allowed to sign certificates, valid at
/// the signing time: otherwise any Fulcio leaf holder could mint leaves for anyone.
#[test]
fn chain_annotation_certificates_must_be_valid_cas() {
    let root = root_ca(0x31, CA_NAME);
    let sub = "O=fleetlet test,CN=not really a ca";
    let leaf_like = vec![
        ext(&KeyUsage(KeyUsages::DigitalSignature.into()), true),
        ext(&ExtendedKeyUsage(vec![OID_KP_CODE_SIGNING]), false),
        ext(
            &BasicConstraints {
                ca: false,
                path_len_constraint: None,
            },
            true,
        ),
    ];
    let ca_without_cert_sign = vec![
        ext(
            &BasicConstraints {
                ca: true,
                path_len_constraint: None,
            },
            true,
        ),
        ext(&KeyUsage(KeyUsages::DigitalSignature.into()), true),
    ];
    let window = (ISSUED - 86_400, ISSUED + 86_400);
    for (exts, validity, why) in [
        (leaf_like.clone(), window, "not a CA"),
        (leaf_like[..2].to_vec(), window, "not a CA"),
        (ca_without_cert_sign, window, "keyCertSign"),
        (
            ca_extensions(),
            (ISSUED - 86_400, SIGNED_AT - 1),
            "not valid at",
        ),
        (
            ca_extensions(),
            (SIGNED_AT + 1, ISSUED + 86_400),
            "not valid at",
        ),
    ] {
        let fake = issued_ca(&root, 0x51, sub, exts, validity);
        let w = World::keyless_with(&fake, &[&fake, &root], &[&[&root]]);
        match keyless_err(w.verify()) {
            KeylessError::CertificateChain(e) => assert!(e.contains(why), "{why}: {e}"),
            other => panic!("{why}: {other:?}"),
        }
    }
    // The same, as a proper CA, verifies.
    let good = issued_ca(&root, 0x51, sub, ca_extensions(), window);
    World::keyless_with(&good, &[&good, &root], &[&[&root]])
        .verify()
        .expect("verifies");
}

#[test]
fn ca_not_valid_at_signing_time_is_rejected() {
    let ca = root_ca(0x31, CA_NAME);
    let mut w = World::keyless();
    // The only Fulcio CA of the root starts after the (SET-signed) integrated time.
    let mut root: Value = json!({
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": [{
            "baseUrl": "https://rekor.example.com",
            "publicKey": {
                "rawBytes": B64.encode(spki_der(&rekor_key())),
                "validFor": {"start": "2024-01-01T00:00:00Z"}
            }
        }],
        "certificateAuthorities": [{
            "uri": "https://fulcio.example.com",
            "certChain": {"certificates": [{"rawBytes": B64.encode(&ca.der)}]},
            "validFor": {"start": "2026-01-01T00:00:00Z"}
        }]
    });
    w.root = TrustedRoot::from_json(&serde_json::to_vec(&root).expect("json")).expect("root");
    assert!(matches!(
        keyless_err(w.verify()),
        KeylessError::NoCertificateAuthority(SIGNED_AT)
    ));
    root["certificateAuthorities"][0]["validFor"]["start"] = "2024-01-01T00:00:00Z".into();
    w.root = TrustedRoot::from_json(&serde_json::to_vec(&root).expect("json")).expect("root");
    w.verify().expect("verifies once the CA is valid");
}

#[test]
fn integrated_time_outside_certificate_validity_is_rejected() {
    for t in [ISSUED - 1, ISSUED + LEAF_LIFETIME + 1] {
        let mut w = World::keyless();
        w.integrated_time = t; // the SET is re-signed over it
        match keyless_err(w.verify()) {
            KeylessError::SigningTimeOutsideCertificate {
                integrated_time,
                not_before,
                not_after,
            } => {
                assert_eq!(integrated_time, t);
                assert_eq!((not_before, not_after), (ISSUED, ISSUED + LEAF_LIFETIME));
            }
            other => panic!("{other:?}"),
        }
    }
    // The edges are inside.
    for t in [ISSUED, ISSUED + LEAF_LIFETIME] {
        let mut w = World::keyless();
        w.integrated_time = t;
        w.verify().expect("verifies");
    }
}

#[test]
fn set_signed_by_an_unknown_key_is_rejected() {
    let mut w = World::keyless();
    w.set_key = p256::ecdsa::SigningKey::from_slice(&[0x66; 32]).expect("scalar");
    assert!(matches!(
        keyless_err(w.verify()),
        KeylessError::SetInvalid(_)
    ));
}

#[test]
fn tampered_set_is_rejected() {
    let w = World::keyless();
    let mut a = w.annotations();
    let mut bundle: Value = serde_json::from_str(&a[BUNDLE_ANNOTATION]).expect("json");
    // Claim another log index than the one signed.
    bundle["Payload"]["logIndex"] = (LOG_INDEX + 1).into();
    a.insert(BUNDLE_ANNOTATION.into(), bundle.to_string());
    let m = parse_layer_annotations(&a).expect("parses");
    let r = verify_keyless_layer(&w.payload, &w.signature, &m, &w.root, &identity());
    assert!(matches!(keyless_err(r), KeylessError::SetInvalid(_)));
}

#[test]
fn log_id_not_in_the_trusted_root_is_rejected() {
    let mut w = World::keyless();
    w.log_id = hex::encode(Sha256::digest(b"another log"));
    match keyless_err(w.verify()) {
        KeylessError::UnknownLog(id) => assert_eq!(id, w.log_id),
        other => panic!("{other:?}"),
    }
}

#[test]
fn rekor_key_not_valid_at_integrated_time_is_rejected() {
    let ca = root_ca(0x31, CA_NAME);
    let mut w = World::keyless();
    w.root = trusted_root("2025-07-01T00:00:00Z", &[&[&ca]]);
    assert!(matches!(
        keyless_err(w.verify()),
        KeylessError::LogKeyNotValid(_)
    ));
}

#[test]
fn body_naming_another_signature_is_rejected() {
    let mut w = World::keyless();
    let other = sign(&leaf_key(), b"another payload");
    w.body["spec"]["signature"]["content"] = B64.encode(other).into();
    assert!(matches!(
        keyless_err(w.verify()),
        KeylessError::TlogBodyMismatch {
            field: "signature",
            ..
        }
    ));
}

#[test]
fn body_naming_another_certificate_is_rejected() {
    let mut w = World::keyless();
    let other = leaf_cert(&root_ca(0x31, CA_NAME), &leaf_key(), ISSUED + 1, ISSUER);
    w.body["spec"]["signature"]["publicKey"]["content"] =
        B64.encode(pem("CERTIFICATE", &other)).into();
    assert!(matches!(
        keyless_err(w.verify()),
        KeylessError::TlogBodyMismatch {
            field: "verifier",
            ..
        }
    ));
}

#[test]
fn body_naming_another_payload_hash_is_rejected() {
    let mut w = World::keyless();
    w.body["spec"]["data"]["hash"]["value"] = hex::encode(Sha256::digest(b"other")).into();
    assert!(matches!(
        keyless_err(w.verify()),
        KeylessError::TlogBodyMismatch {
            field: "data.hash",
            ..
        }
    ));
}

#[test]
fn body_of_another_kind_is_rejected() {
    let mut w = World::keyless();
    w.body["kind"] = "rekord".into();
    assert!(matches!(
        keyless_err(w.verify()),
        KeylessError::UnsupportedEntryKind(_)
    ));
}

#[test]
fn signature_over_another_payload_is_rejected() {
    let mut w = World::keyless();
    w.payload = b"{}".to_vec(); // the log body still names the signed payload's hash
    assert!(matches!(
        keyless_err(w.verify()),
        KeylessError::SignatureInvalid(_)
    ));
}

#[test]
fn missing_certificate_is_rejected() {
    let mut w = World::keyless();
    w.leaf_der = None;
    assert!(matches!(w.verify(), Err(LegacyError::MissingCertificate)));
}

#[test]
fn missing_rekor_bundle_is_rejected() {
    let w = World::keyless();
    let mut a = w.annotations();
    a.remove(BUNDLE_ANNOTATION);
    let m = parse_layer_annotations(&a).expect("parses");
    assert!(matches!(
        verify_keyless_layer(&w.payload, &w.signature, &m, &w.root, &identity()),
        Err(LegacyError::MissingRekorBundle)
    ));
}

#[test]
fn malformed_annotations_are_rejected() {
    let w = World::keyless();
    let ca = root_ca(0x31, CA_NAME);
    let cases: [(&str, String); 7] = [
        (BUNDLE_ANNOTATION, "{\"SignedEntryTimestamp\": ".into()),
        (
            BUNDLE_ANNOTATION,
            r#"{"SignedEntryTimestamp":"AAAA"}"#.into(),
        ),
        (
            CERTIFICATE_ANNOTATION,
            "-----BEGIN CERTIFICATE-----\nAAAA\n".into(),
        ),
        (CERTIFICATE_ANNOTATION, "not a certificate".into()),
        (
            CERTIFICATE_ANNOTATION,
            pem("CERTIFICATE", w.leaf_der.as_deref().expect("leaf")).repeat(2),
        ),
        (
            CHAIN_ANNOTATION,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
        ),
        (CHAIN_ANNOTATION, pem("CERTIFICATE", &ca.der).repeat(9)),
    ];
    for (annotation, value) in cases {
        let mut a = w.annotations();
        a.insert(annotation.into(), value.clone());
        match parse_layer_annotations(&a) {
            Err(LegacyError::MalformedAnnotation { annotation: at, .. }) => {
                assert_eq!(at, annotation, "{value}")
            }
            other => panic!("{annotation}={value:?}: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Key-based with a Rekor bundle

#[test]
fn key_based_layer_with_a_valid_tlog_bundle_verifies() {
    let w = World::key_based();
    assert_eq!(w.verify_key().expect("verifies"), LOG_INDEX as u64);
    // The key may also be given as PEM.
    let pem_key = pem("PUBLIC KEY", &w.signer_spki);
    assert_eq!(
        verify_key_tlog(
            &w.payload,
            &w.signature,
            pem_key.as_bytes(),
            &w.material(),
            &w.root
        )
        .expect("verifies"),
        LOG_INDEX as u64
    );
}

#[test]
fn key_based_layer_with_a_tampered_set_is_rejected() {
    let w = World::key_based();
    let mut a = w.annotations();
    let mut bundle: Value = serde_json::from_str(&a[BUNDLE_ANNOTATION]).expect("json");
    let mut set = B64
        .decode(bundle["SignedEntryTimestamp"].as_str().expect("set"))
        .expect("b64");
    let last = set.len() - 1;
    set[last] ^= 1;
    bundle["SignedEntryTimestamp"] = B64.encode(set).into();
    a.insert(BUNDLE_ANNOTATION.into(), bundle.to_string());
    let m = parse_layer_annotations(&a).expect("parses");
    assert!(matches!(
        verify_key_tlog(&w.payload, &w.signature, &w.signer_spki, &m, &w.root),
        Err(LegacyError::Keyless(KeylessError::SetInvalid(_)))
    ));
}

#[test]
fn key_based_layer_logged_under_another_key_is_rejected() {
    let mut w = World::key_based();
    let other = p256::ecdsa::SigningKey::from_slice(&[0x24; 32]).expect("scalar");
    w.body["spec"]["signature"]["publicKey"]["content"] =
        B64.encode(pem("PUBLIC KEY", &spki_der(&other))).into();
    assert!(matches!(
        w.verify_key(),
        Err(LegacyError::Keyless(KeylessError::TlogBodyMismatch {
            field: "verifier",
            ..
        }))
    ));
}

#[test]
fn key_based_layer_without_a_bundle_or_with_a_wrong_key_is_rejected() {
    let w = World::key_based();
    let mut a = w.annotations();
    a.remove(BUNDLE_ANNOTATION);
    let m = parse_layer_annotations(&a).expect("parses");
    assert!(matches!(
        verify_key_tlog(&w.payload, &w.signature, &w.signer_spki, &m, &w.root),
        Err(LegacyError::MissingRekorBundle)
    ));
    let other = spki_der(&p256::ecdsa::SigningKey::from_slice(&[0x24; 32]).expect("scalar"));
    assert!(matches!(
        verify_key_tlog(&w.payload, &w.signature, &other, &w.material(), &w.root),
        Err(LegacyError::Keyless(KeylessError::SignatureInvalid(_)))
    ));
}
