//! Reading SQL without parsing it: a lexer, and what statements do to session state.

pub mod effects;
pub mod lex;
