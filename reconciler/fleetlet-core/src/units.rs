//! Typed scalar values of the fleet repo: ports, byte quantities (`64Mi`) and durations (`50ms`).
//! Each parses once and says exactly what it expected when it cannot.

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A TCP port, 1-65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Port(pub u16);

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Port {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.0)
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const EXPECTED: &str = "expected integer 1-65535";
        impl Visitor<'_> for V {
            type Value = Port;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an integer 1-65535")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Port, E> {
                match u16::try_from(v) {
                    Ok(p) if p > 0 => Ok(Port(p)),
                    _ => Err(E::custom(format!("{EXPECTED}, got {v}"))),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Port, E> {
                if v < 0 {
                    return Err(E::custom(format!("{EXPECTED}, got {v}")));
                }
                self.visit_u64(v as u64)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Port, E> {
                Err(E::custom(format!("{EXPECTED}, got {v}")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Port, E> {
                Err(E::custom(format!("{EXPECTED}, got {v:?}")))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Port, E> {
                Err(E::custom(format!("{EXPECTED}, got {v}")))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Port, E> {
                Err(E::custom(format!("{EXPECTED}, got null")))
            }
        }
        d.deserialize_any(V)
    }
}

impl schemars::JsonSchema for Port {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Port".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "integer", "minimum": 1, "maximum": 65535})
    }
}

/// A quantity of bytes written the Kubernetes way: `67108864`, `64Mi`, `1Gi`, `500M`, `10k`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let expected = || format!("expected a byte quantity such as 64Mi, 1Gi or 500M, got {s:?}");
        let n: u64 = num.parse().map_err(|_| expected())?;
        let mult: u64 = match unit {
            "" => 1,
            "k" | "K" => 1000,
            "M" => 1000u64.pow(2),
            "G" => 1000u64.pow(3),
            "Ki" => 1 << 10,
            "Mi" => 1 << 20,
            "Gi" => 1 << 30,
            _ => return Err(expected()),
        };
        n.checked_mul(mult).map(ByteSize).ok_or_else(expected)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (unit, size) in [("Gi", 1u64 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
            if b >= size && b.is_multiple_of(size) {
                return write!(f, "{}{unit}", b / size);
            }
        }
        write!(f, "{b}")
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match StringOrInt::deserialize(d)? {
            StringOrInt::Int(n) => Ok(ByteSize(n)),
            StringOrInt::Str(s) => ByteSize::parse(&s).map_err(de::Error::custom),
        }
    }
}

impl schemars::JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "bytes, as an integer or with a suffix: k, M, G, Ki, Mi, Gi",
            "anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": "^[0-9]+(k|K|M|G|Ki|Mi|Gi)?$"}]
        })
    }
}

/// A duration written as `250ms`, `5s`, `2m` or `1h`. Kept in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DurationSpec(pub u64);

impl DurationSpec {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let expected = || format!("expected a duration such as 250ms, 5s, 2m, 1h or 7d, got {s:?}");
        let n: u64 = num.parse().map_err(|_| expected())?;
        let mult = match unit {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(expected()),
        };
        n.checked_mul(mult).map(DurationSpec).ok_or_else(expected)
    }

    pub fn as_duration(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0)
    }
}

impl fmt::Display for DurationSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        for (unit, size) in [
            ("d", 86_400_000u64),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1000),
        ] {
            if ms >= size && ms.is_multiple_of(size) {
                return write!(f, "{}{unit}", ms / size);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl Serialize for DurationSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DurationSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match StringOrInt::deserialize(d)? {
            StringOrInt::Int(n) => Err(de::Error::custom(format!(
                "expected a duration with a unit such as 250ms or 5s, got {n}"
            ))),
            StringOrInt::Str(s) => DurationSpec::parse(&s).map_err(de::Error::custom),
        }
    }
}

impl schemars::JsonSchema for DurationSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "pattern": "^[0-9]+(ms|s|m|h|d)$"})
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StringOrInt {
    Int(u64),
    Str(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes() {
        for (input, want) in [
            ("64Mi", Some(64 << 20)),
            ("1Gi", Some(1 << 30)),
            ("500M", Some(500_000_000)),
            ("10k", Some(10_000)),
            ("123", Some(123)),
            ("12X", None),
            ("Mi", None),
            ("99999999999999Gi", None),
        ] {
            assert_eq!(ByteSize::parse(input).ok().map(|b| b.0), want, "{input}");
        }
        assert_eq!(ByteSize(64 << 20).to_string(), "64Mi");
    }

    #[test]
    fn durations() {
        for (input, want) in [
            ("50ms", Some(50)),
            ("2s", Some(2000)),
            ("1m", Some(60_000)),
            ("5", None),
            ("1d", Some(86_400_000)),
            ("1w", None),
        ] {
            assert_eq!(
                DurationSpec::parse(input).ok().map(|d| d.0),
                want,
                "{input}"
            );
        }
        assert_eq!(DurationSpec(1500).to_string(), "1500ms");
        assert_eq!(DurationSpec(30_000).to_string(), "30s");
    }

    #[test]
    fn ports_say_what_they_expected() {
        let e = serde_yaml::from_str::<Port>("\"80a\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected integer 1-65535, got \"80a\""), "{e}");
        assert!(serde_yaml::from_str::<Port>("0").is_err());
        assert!(serde_yaml::from_str::<Port>("70000").is_err());
        assert_eq!(serde_yaml::from_str::<Port>("8080").unwrap(), Port(8080));
    }
}
