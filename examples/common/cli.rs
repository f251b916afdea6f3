//! Command-line settings shared by the clap-based examples. An example includes this file with
//! `#[path = "common/cli.rs"] mod cli;`.

/// Lets flag `arg` take a negative number as its value, so that `--steps -1` reaches the flag's
/// value parser, whose error names the flag and the expected value, in place of clap's
/// "unexpected argument '-1' found". Apply it to every flag with
/// `#[command(mut_args = cli::allow_negative_numbers)]`.
pub fn allow_negative_numbers(arg: clap::Arg) -> clap::Arg {
    // clap's debug assertions reject the setting on a flag that takes no value.
    let takes_values = arg.get_action().takes_values();
    arg.allow_negative_numbers(takes_values)
}
