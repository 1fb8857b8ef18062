//! `OneOrMany<T>`: a rules value written either as one scalar (`kind: delete`) or as a list
//! (`kind: [delete, update]`), with each list item's position kept for later checks.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, IntoDeserializer, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use super::problem::Pos;

/// One value, or a list of values each with its own location.
#[derive(Debug)]
pub(crate) enum OneOrMany<T> {
    One(T),
    Many(Vec<Spanned<T>>),
}

impl<T> OneOrMany<T> {
    /// Every value with its position; a single value sits at `whole` (the field's own value).
    pub(crate) fn items(&self, whole: Pos) -> Vec<(Pos, &T)> {
        match self {
            Self::One(value) => vec![(whole, value)],
            Self::Many(values) => values
                .iter()
                .map(|value| (Pos::of(value.referenced), &value.value))
                .collect(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        matches!(self, Self::Many(values) if values.is_empty())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(OneOrManyVisitor(PhantomData))
    }
}

struct OneOrManyVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for OneOrManyVisitor<T> {
    type Value = OneOrMany<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value or a list of values")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        // Through the parser's own error type, so messages read like every other field's.
        T::deserialize(value.into_deserializer()).map(OneOrMany::One)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut values = Vec::new();
        while let Some(value) = seq.next_element()? {
            values.push(value);
        }
        Ok(OneOrMany::Many(values))
    }
}
