//! Kubernetes-style label selectors (`matchLabels`, `matchExpressions`), evaluated purely.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl LabelSelector {
    /// Kubernetes semantics: every label and every expression must hold; an empty selector
    /// matches everything.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let value = labels.get(&r.key);
                match r.operator {
                    Operator::In => value.is_some_and(|v| r.values.contains(v)),
                    Operator::NotIn => value.is_none_or(|v| !r.values.contains(v)),
                    Operator::Exists => value.is_some(),
                    Operator::DoesNotExist => value.is_none(),
                }
            })
    }

    /// Structural problems, as (field, message): `In`/`NotIn` need values, `Exists` must not have any.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (i, r) in self.match_expressions.iter().enumerate() {
            let field = format!("matchExpressions[{i}].values");
            match r.operator {
                Operator::In | Operator::NotIn if r.values.is_empty() => out.push((
                    field,
                    format!("operator {:?} needs at least one value", r.operator),
                )),
                Operator::Exists | Operator::DoesNotExist if !r.values.is_empty() => {
                    out.push((field, format!("operator {:?} takes no values", r.operator)))
                }
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn kubernetes_semantics() {
        let site = labels(&[("tier", "store"), ("region", "eu")]);
        let sel = |yaml: &str| serde_yaml::from_str::<LabelSelector>(yaml).unwrap();
        for (yaml, want) in [
            ("{}", true),
            ("matchLabels: {tier: store}", true),
            ("matchLabels: {tier: turbine}", false),
            (
                "matchExpressions: [{key: region, operator: In, values: [eu, us]}]",
                true,
            ),
            (
                "matchExpressions: [{key: region, operator: NotIn, values: [eu]}]",
                false,
            ),
            (
                "matchExpressions: [{key: env, operator: NotIn, values: [prod]}]",
                true,
            ),
            ("matchExpressions: [{key: env, operator: Exists}]", false),
            (
                "matchExpressions: [{key: env, operator: DoesNotExist}]",
                true,
            ),
            (
                "{matchLabels: {tier: store}, matchExpressions: [{key: region, operator: In, values: [us]}]}",
                false,
            ),
        ] {
            assert_eq!(sel(yaml).matches(&site), want, "{yaml}");
        }
    }

    #[test]
    fn finds_malformed_expressions() {
        let s: LabelSelector =
            serde_yaml::from_str("matchExpressions: [{key: a, operator: In}]").unwrap();
        assert_eq!(s.problems().len(), 1);
    }
}
