//! The routing section of the semantic pass: control-plane settings, extra write functions,
//! and the ordered rules (names, actions; matches are in `matcher.rs`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_saphyr::Spanned;

use super::build::{at, Builder};
use super::config::{
    CachePolicy, DatabaseConfig, RouteRule, RoutingConfig, RuleAction, RuleMatch, UserConfig,
};
use super::problem::{child, item};
use super::schema::{RawCache, RawRouting, RawRule};

const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_millis(100);
const MIN_CHECK_INTERVAL: Duration = Duration::from_millis(10);
const MAX_CHECK_INTERVAL: Duration = Duration::from_secs(60);
const DEFAULT_FAIL_AFTER: u32 = 1;
const DEFAULT_RECOVER_AFTER: u32 = 3;

/// Names rules may refer to.
pub(super) struct Defined<'a> {
    pub users: &'a BTreeMap<String, UserConfig>,
    pub databases: &'a BTreeMap<String, DatabaseConfig>,
}

impl Builder<'_> {
    pub(super) fn routing(
        &mut self,
        raw: Option<&RawRouting>,
        users: &BTreeMap<String, UserConfig>,
        databases: &BTreeMap<String, DatabaseConfig>,
    ) -> RoutingConfig {
        let count = |b: &mut Self, raw: Option<&Spanned<u32>>, field, default| {
            raw.map_or(default, |n| b.at_least_one(n, &child("routing", field)))
        };
        let defined = Defined { users, databases };
        RoutingConfig {
            rules: raw
                .and_then(|r| r.rules.as_ref())
                .map(|rules| self.rules(rules, &defined))
                .unwrap_or_default(),
            write_functions: raw
                .and_then(|r| r.write_functions.as_ref())
                .map(|names| self.write_functions(names))
                .unwrap_or_default(),
            check_interval: self.check_interval(raw.and_then(|r| r.check_interval.as_ref())),
            fail_after: count(
                self,
                raw.and_then(|r| r.fail_after.as_ref()),
                "fail_after",
                DEFAULT_FAIL_AFTER,
            ),
            recover_after: count(
                self,
                raw.and_then(|r| r.recover_after.as_ref()),
                "recover_after",
                DEFAULT_RECOVER_AFTER,
            ),
        }
    }

    fn check_interval(&mut self, raw: Option<&Spanned<String>>) -> Duration {
        let path = "routing.check_interval";
        match (raw, self.duration(raw, path)) {
            (Some(raw), Some(interval))
                if !(MIN_CHECK_INTERVAL..=MAX_CHECK_INTERVAL).contains(&interval) =>
            {
                self.report(at(raw), path, "must be between 10ms and 60s");
                DEFAULT_CHECK_INTERVAL
            }
            (_, interval) => interval.unwrap_or(DEFAULT_CHECK_INTERVAL),
        }
    }

    /// Lower-case, without a schema: calls are matched by function name alone.
    fn write_functions(&mut self, raw: &Spanned<Vec<Spanned<String>>>) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for (index, name) in raw.value.iter().enumerate() {
            let unqualified = name.value.rsplit('.').next().unwrap_or_default();
            if unqualified.trim().is_empty() {
                let path = item("routing.write_functions", index);
                self.report(at(name), path, "function name must not be empty");
                continue;
            }
            let unqualified = unqualified.to_lowercase();
            if !names.contains(&unqualified) {
                names.push(unqualified);
            }
        }
        names
    }

    fn rules(&mut self, raw: &Spanned<Vec<Spanned<RawRule>>>, defined: &Defined) -> Vec<RouteRule> {
        // Rule name → the path of the rule that took it first.
        let mut taken: BTreeMap<String, String> = BTreeMap::new();
        let mut rules = Vec::new();
        for (index, rule) in raw.value.iter().enumerate() {
            let path = item("routing.rules", index);
            let name = self.rule_name(&rule.value, &path, &mut taken);
            let matcher = match &rule.value.matcher {
                Some(matcher) => self.rule_match(matcher, &child(&path, "match"), defined),
                None => {
                    let message =
                        "a rule needs match: (write `match: {}` to match every statement)";
                    self.report(at(rule), path.clone(), message);
                    RuleMatch::default()
                }
            };
            let action = self.rule_action(rule, &path);
            rules.push(RouteRule {
                name,
                matcher,
                action,
            });
        }
        rules
    }

    fn rule_name(
        &mut self,
        rule: &RawRule,
        path: &str,
        taken: &mut BTreeMap<String, String>,
    ) -> String {
        let name = match &rule.name {
            Some(name) => self.non_empty(name, &child(path, "name")),
            None => path.to_owned(),
        };
        if let Some(first) = taken.get(&name) {
            let message = format!("rule name {name:?} is already used by {first}");
            // Defaults are paths, unique by construction: only a written name can clash.
            let at = rule.name.as_ref().map(at).unwrap_or_default();
            self.report(at, child(path, "name"), message);
        } else if !name.is_empty() {
            taken.insert(name.clone(), path.to_owned());
        }
        name
    }

    fn rule_action(&mut self, raw: &Spanned<RawRule>, path: &str) -> RuleAction {
        let rule = &raw.value;
        let block = rule
            .block
            .as_ref()
            .map(|block| self.non_empty(block, &child(path, "block")));
        if rule.block.is_some() {
            // A blocked statement never runs: where or how long it would run means nothing.
            let ignored = [
                ("route", rule.route.as_ref().map(at)),
                ("timeout", rule.timeout.as_ref().map(at)),
                ("cache", rule.cache.as_ref().map(at)),
            ];
            for (field, position) in ignored {
                if let Some(position) = position {
                    let message = format!("{field} cannot be combined with block");
                    self.report(position, child(path, field), message);
                }
            }
        } else if rule.route.is_none() && rule.timeout.is_none() && rule.cache.is_none() {
            let message = "a rule needs an action: route, block, timeout or cache";
            self.report(at(raw), path, message);
        }
        RuleAction {
            route: rule.route.as_ref().map(|route| route.value),
            block,
            timeout: self.positive_duration(rule.timeout.as_ref(), &child(path, "timeout")),
            cache: rule.cache.as_ref().map(|cache| self.cache(cache, path)),
        }
    }

    fn cache(&mut self, raw: &Spanned<RawCache>, path: &str) -> CachePolicy {
        match &raw.value {
            RawCache::Never => CachePolicy::Never,
            RawCache::Ttl(ttl) => {
                let path = child(&child(path, "cache"), "ttl");
                let ttl = self.positive_duration(Some(ttl), &path);
                CachePolicy::Ttl(ttl.unwrap_or_default())
            }
        }
    }

    /// A duration that must be above zero; `None` when absent (or reported invalid).
    pub(super) fn positive_duration(
        &mut self,
        raw: Option<&Spanned<String>>,
        path: &str,
    ) -> Option<Duration> {
        let duration = self.duration(raw, path)?;
        if duration.is_zero() {
            let position = raw.map(at).unwrap_or_default();
            self.report(position, path, "must be greater than 0");
        }
        Some(duration)
    }
}
