//! Command-line settings shared by the clap-based examples. An example includes this file with
//! `#[path = "common/cli.rs"] mod cli;`.

use std::any::TypeId;

use clap::error::{ContextKind, ContextValue};
use dcgan::error::shorten_value;

/// Lets flag `arg` take a negative number as its value, so that `--steps -1` and
/// `--lr-d -1e-3` reach the flag's value parser, whose error names the flag and the expected
/// value, in place of clap's "unexpected argument '-1' found". Apply it to every flag with
/// `#[command(mut_args = cli::allow_negative_numbers)]`.
pub fn allow_negative_numbers(arg: clap::Arg) -> clap::Arg {
    // clap's debug assertions reject the setting on a flag that takes no value.
    let takes_values = arg.get_action().takes_values();
    // clap's negative-number check accepts `-3` and `-0.5` but not the exponent form `-1e-3`.
    // So a float flag takes any value that starts with a hyphen, and its value parser rejects
    // one such as `--force` with an error that names the flag.
    let value_type = arg.get_value_parser().type_id();
    let is_float = value_type == TypeId::of::<f64>() || value_type == TypeId::of::<f32>();
    arg.allow_negative_numbers(takes_values).allow_hyphen_values(takes_values && is_float)
}

/// Shortens the rejected value that a clap error echoes ("invalid value '1000...' for
/// '--steps <STEPS>'") as the crate's own errors do ([`shorten_value`]), so that a value of
/// hundreds of digits does not flood the message. Short values stay exact. Call it on every
/// parse error: `Args::try_parse().unwrap_or_else(|err| cli::shorten_echoed_value(err).exit())`.
pub fn shorten_echoed_value(mut err: clap::Error) -> clap::Error {
    if let Some(ContextValue::String(value)) = err.get(ContextKind::InvalidValue) {
        let shortened = shorten_value(value);
        err.insert(ContextKind::InvalidValue, ContextValue::String(shortened));
    }
    err
}
