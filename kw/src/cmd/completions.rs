//! `kw completions bash|zsh|fish`.

use clap::{Args, ValueEnum};
use clap_complete::Shell;

use crate::error::Result;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ShellName {
    Bash,
    Zsh,
    Fish,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  kw completions bash > /etc/bash_completion.d/kw\n  kw completions zsh > \"${fpath[1]}/_kw\"\n  kw completions fish > ~/.config/fish/completions/kw.fish"
)]
pub struct CompletionsArgs {
    /// The shell
    #[arg(value_enum)]
    pub shell: ShellName,
}

pub fn run(args: CompletionsArgs, mut command: clap::Command) -> Result<()> {
    let shell = match args.shell {
        ShellName::Bash => Shell::Bash,
        ShellName::Zsh => Shell::Zsh,
        ShellName::Fish => Shell::Fish,
    };
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, "kw", &mut out);
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&out).and_then(|()| stdout.flush()).map_err(crate::output::write_error)
}
