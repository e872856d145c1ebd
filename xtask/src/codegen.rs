//! `cargo xtask codegen`: generates `kafka-wire/src/codec/messages/generated.rs`.

pub fn run(_check: bool) -> anyhow::Result<()> {
    anyhow::bail!("codegen is being written")
}
