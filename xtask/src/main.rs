mod codegen;

fn main() -> anyhow::Result<()> {
    codegen::run(false)
}
