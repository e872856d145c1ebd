//! `cargo xtask codegen [--check]`: turns the message descriptions in `kafka-wire/schema/*.msg`
//! into `kafka-wire/src/codec/messages/generated.rs`.
//!
//! # The `.msg` notation
//!
//! One file per API. Blank lines and lines starting with `#` are ignored.
//!
//! ```text
//! api Produce key=0
//! request versions=3-13 flexible=9+
//!   transactional_id: string? v3+
//!   topic_data: [TopicProduceData]
//!     name: string v0-12
//!     partition_data: [PartitionProduceData]
//!       records: records?
//! response versions=3-13 flexible=9+
//!   …
//! response-struct TopicPartitions
//!   topic_id: uuid
//! ```
//!
//! A field line is `name: TYPE [tokens]`, nested two spaces per level under its parent. `TYPE` is
//! a primitive (`error` (an `int16` error code) `bool i8 i16 i32 i64 u16 u32 f64 uuid string bytes records`), a struct name, or
//! `[T]` for an array. A struct-typed field followed by deeper lines declares that struct;
//! without them it refers to a `request-struct`/`response-struct` of the file. A trailing `?`
//! makes the field nullable in all its versions. Tokens: `vA+`/`vA-B` (versions of the field;
//! all versions when absent), `null=A+` (nullable only in those versions), `tag=N` (a tagged
//! field of flexible versions), `tagged=A+` (versions in which it is tagged), `default=X`,
//! `ignorable` (see below).
//!
//! Encoding a value that holds a non-default value in a field the chosen version does not carry
//! is an error, so that nothing is dropped silently. An `ignorable` field is the exception: it is
//! one of two forms of the same information, each carried by some versions (a topic's name in
//! old versions, its id in new ones), which callers fill both of; the form the version lacks is
//! left out. Kafka's schemas mark the same fields `"ignorable": true`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

pub fn run(check: bool) -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let schema_dir = root.join("kafka-wire/schema");
    let out_path = root.join("kafka-wire/src/codec/messages/generated.rs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&schema_dir)
        .with_context(|| format!("reading {}", schema_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "msg"))
        .collect();
    files.sort();
    let mut apis = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f)?;
        apis.push(parse(&text).with_context(|| format!("in {}", f.display()))?);
    }
    apis.sort_by_key(|a| a.key);
    let code = rustfmt(&generate(&apis)?, &root)?;
    if check {
        // Both sides go through the same local rustfmt, so a rustfmt release that lays code out
        // differently from the one that wrote the file does not make the check fail.
        let current = std::fs::read_to_string(&out_path).unwrap_or_default();
        if rustfmt(&current, &root)? != code {
            bail!("{} is out of date: run `cargo xtask codegen`", out_path.display());
        }
        println!("{} is up to date ({} APIs)", out_path.display(), apis.len());
    } else {
        std::fs::write(&out_path, code)?;
        println!("wrote {} ({} APIs)", out_path.display(), apis.len());
    }
    Ok(())
}

/// Formats generated code with the toolchain's rustfmt and the workspace's `rustfmt.toml`, so
/// that `--check` compares like with like and `cargo fmt --check` agrees with the written file.
fn rustfmt(code: &str, root: &Path) -> Result<String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("rustfmt")
        .args(["--edition", "2021", "--emit", "stdout", "--config-path"])
        .arg(root.join("rustfmt.toml"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("running rustfmt")?;
    let mut stdin = child.stdin.take().context("rustfmt stdin")?;
    let input = code.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output()?;
    writer.join().map_err(|_| anyhow::anyhow!("rustfmt writer panicked"))??;
    if !output.status.success() {
        bail!("rustfmt failed on the generated code");
    }
    Ok(String::from_utf8(output.stdout)?)
}

// ===== model =====

#[derive(Clone, Copy, Debug, PartialEq)]
struct Range {
    min: i16,
    max: i16,
}

impl Range {
    const ALL: Range = Range { min: 0, max: i16::MAX };
    const NONE: Range = Range { min: 1, max: 0 };

    fn parse(s: &str) -> Result<Range> {
        let s = s.trim_start_matches('v');
        if s == "none" {
            return Ok(Range::NONE);
        }
        if let Some(a) = s.strip_suffix('+') {
            return Ok(Range { min: a.parse()?, max: i16::MAX });
        }
        if let Some((a, b)) = s.split_once('-') {
            return Ok(Range { min: a.parse()?, max: b.parse()? });
        }
        let v = s.parse()?;
        Ok(Range { min: v, max: v })
    }

    fn is_empty(self) -> bool {
        self.min > self.max
    }

    fn intersect(self, o: Range) -> Range {
        Range { min: self.min.max(o.min), max: self.max.min(o.max) }
    }

    /// A Rust condition on `version` that holds inside `self`, given that `version` is already
    /// known to lie in `within`. `None` means "always".
    fn condition(self, within: Range) -> Option<String> {
        let r = self.intersect(within);
        if r.is_empty() {
            return Some("false".into());
        }
        let lo = r.min > within.min;
        let hi = r.max < within.max;
        match (lo, hi) {
            (false, false) => None,
            (true, false) => Some(format!("version >= {}", r.min)),
            (false, true) => Some(format!("version <= {}", r.max)),
            (true, true) if r.min == r.max => Some(format!("version == {}", r.min)),
            (true, true) => Some(format!("({}..={}).contains(&version)", r.min, r.max)),
        }
    }
}

#[derive(Clone, Debug)]
enum Ty {
    Prim(&'static str),
    Array(Box<Ty>),
    Struct(String),
}

#[derive(Clone, Debug)]
struct Field {
    name: String,
    ty: Ty,
    versions: Range,
    nullable: Range,
    tag: Option<u32>,
    tagged: Range,
    default: Option<String>,
    ignorable: bool,
}

#[derive(Clone, Debug)]
struct StructDef {
    name: String,
    fields: Vec<Field>,
}

#[derive(Debug)]
struct MessageDef {
    versions: Range,
    flexible: Option<i16>,
    /// The top-level struct first, then every nested and common struct.
    structs: Vec<StructDef>,
}

#[derive(Debug)]
struct ApiDef {
    name: String,
    key: i16,
    request: MessageDef,
    response: MessageDef,
}

// ===== parser =====

const PRIMS: &[&str] =
    &["error", "bool", "i8", "i16", "i32", "i64", "u16", "u32", "f64", "uuid", "string", "bytes", "records"];

fn parse(text: &str) -> Result<ApiDef> {
    let mut name = None;
    let mut key = None;
    // (kind, versions, flexible, lines) per section
    let mut sections: Vec<(String, Vec<(usize, String)>)> = Vec::new();
    for (lineno, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        if indent == 0 {
            if let Some(rest) = line.strip_prefix("api ") {
                let mut it = rest.split_whitespace();
                name = it.next().map(str::to_owned);
                key = Some(
                    it.next().and_then(|k| k.strip_prefix("key=")).context("api line needs key=N")?.parse::<i16>()?,
                );
            } else {
                sections.push((line.to_owned(), Vec::new()));
            }
        } else {
            if indent % 2 != 0 {
                bail!("line {}: indentation must be a multiple of two spaces", lineno + 1);
            }
            let section = sections.last_mut().context("field line before any section")?;
            section.1.push((indent / 2, line.trim().to_owned()));
        }
    }
    let name = name.context("missing `api NAME key=N` line")?;
    let mut request = None;
    let mut response = None;
    let mut common: BTreeMap<String, Vec<StructDef>> = BTreeMap::new();
    for (head, lines) in &sections {
        let mut words = head.split_whitespace();
        let kind = words.next().unwrap_or_default();
        match kind {
            "request" | "response" => {
                let mut versions = Range::ALL;
                let mut flexible = None;
                for w in words {
                    if let Some(v) = w.strip_prefix("versions=") {
                        versions = Range::parse(v)?;
                    } else if let Some(v) = w.strip_prefix("flexible=") {
                        let r = Range::parse(v)?;
                        flexible = (!r.is_empty()).then_some(r.min);
                    } else {
                        bail!("unknown token {w} in {head}");
                    }
                }
                let top = format!("{name}{}", if kind == "request" { "Request" } else { "Response" });
                let mut structs = Vec::new();
                let fields = parse_fields(lines, &mut 0, 1, &mut structs)?;
                structs.insert(0, StructDef { name: top, fields });
                let m = MessageDef { versions, flexible, structs };
                if kind == "request" {
                    request = Some(m);
                } else {
                    response = Some(m);
                }
            }
            "request-struct" | "response-struct" => {
                let sname = words.next().context("struct needs a name")?.to_owned();
                let mut nested = Vec::new();
                let fields = parse_fields(lines, &mut 0, 1, &mut nested)?;
                let side = kind.trim_end_matches("-struct").to_owned();
                let list = common.entry(side).or_default();
                list.push(StructDef { name: sname, fields });
                list.extend(nested);
            }
            _ => bail!("unknown section {head}"),
        }
    }
    let mut request = request.context("no request section")?;
    let mut response = response.context("no response section")?;
    request.structs.extend(common.remove("request").unwrap_or_default());
    response.structs.extend(common.remove("response").unwrap_or_default());
    for m in [&request, &response] {
        let mut seen = BTreeMap::new();
        for s in &m.structs {
            if seen.insert(s.name.clone(), ()).is_some() {
                bail!("struct {} is declared twice", s.name);
            }
        }
        for s in &m.structs {
            for f in &s.fields {
                if let Some(n) = struct_name(&f.ty) {
                    if !seen.contains_key(n) {
                        bail!("field {}.{} refers to unknown struct {n}", s.name, f.name);
                    }
                }
            }
        }
    }
    // A struct both sides declare alike is generated once; declared differently, it is an error.
    let mut shared = Vec::new();
    for s in &response.structs {
        if let Some(r) = request.structs.iter().find(|r| r.name == s.name) {
            if format!("{:?}", r.fields) != format!("{:?}", s.fields) {
                bail!("struct {} differs between request and response: rename one", s.name);
            }
            shared.push(s.name.clone());
        }
    }
    response.structs.retain(|s| !shared.contains(&s.name));
    Ok(ApiDef { name, key: key.context("missing key")?, request, response })
}

fn struct_name(ty: &Ty) -> Option<&str> {
    match ty {
        Ty::Struct(n) => Some(n),
        Ty::Array(t) => struct_name(t),
        Ty::Prim(_) => None,
    }
}

fn parse_fields(
    lines: &[(usize, String)],
    pos: &mut usize,
    depth: usize,
    structs: &mut Vec<StructDef>,
) -> Result<Vec<Field>> {
    let mut fields = Vec::new();
    while *pos < lines.len() {
        let (d, text) = &lines[*pos];
        if *d < depth {
            break;
        }
        if *d > depth {
            bail!("unexpected indentation at `{text}`");
        }
        *pos += 1;
        let (fname, rest) = text.split_once(':').with_context(|| format!("no `:` in `{text}`"))?;
        let mut tokens = rest.split_whitespace();
        let mut ty_s = tokens.next().context("field without type")?.to_owned();
        let mut field = Field {
            name: fname.trim().to_owned(),
            ty: Ty::Prim("i8"),
            versions: Range::ALL,
            nullable: Range::NONE,
            tag: None,
            tagged: Range::NONE,
            default: None,
            ignorable: false,
        };
        let all_nullable = ty_s.ends_with('?');
        if all_nullable {
            ty_s.pop();
        }
        for t in tokens {
            if let Some(v) = t.strip_prefix("null=") {
                field.nullable = Range::parse(v)?;
            } else if let Some(v) = t.strip_prefix("tag=") {
                field.tag = Some(v.parse()?);
            } else if let Some(v) = t.strip_prefix("tagged=") {
                field.tagged = Range::parse(v)?;
            } else if let Some(v) = t.strip_prefix("default=") {
                field.default = Some(v.to_owned());
            } else if t == "ignorable" {
                field.ignorable = true;
            } else if t.starts_with('v') {
                field.versions = Range::parse(t)?;
            } else {
                bail!("unknown token `{t}` in `{text}`");
            }
        }
        if all_nullable {
            field.nullable = field.versions;
        }
        if field.tag.is_some() && field.tagged.is_empty() {
            field.tagged = field.versions;
        }
        let (is_array, inner) = match ty_s.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            Some(inner) => (true, inner.to_owned()),
            None => (false, ty_s.clone()),
        };
        let base = match PRIMS.iter().find(|p| **p == inner) {
            Some(p) => Ty::Prim(p),
            None => {
                let has_children = lines.get(*pos).is_some_and(|(d, _)| *d > depth);
                if has_children {
                    let sub = parse_fields(lines, pos, depth + 1, structs)?;
                    structs.push(StructDef { name: inner.clone(), fields: sub });
                }
                Ty::Struct(inner)
            }
        };
        field.ty = if is_array { Ty::Array(Box::new(base)) } else { base };
        fields.push(field);
    }
    Ok(fields)
}

// ===== generator =====

fn snake_upper(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

fn module_name(api: &str) -> String {
    snake_upper(api).to_ascii_lowercase()
}

fn ident(name: &str) -> String {
    match name {
        "type" | "match" | "ref" | "mod" | "use" | "struct" | "loop" | "move" => format!("r#{name}"),
        _ => name.to_owned(),
    }
}

fn prim_rust(p: &str) -> &'static str {
    match p {
        "bool" => "bool",
        "i8" => "i8",
        "i16" => "i16",
        "i32" => "i32",
        "i64" => "i64",
        "u16" => "u16",
        "u32" => "u32",
        "f64" => "f64",
        "uuid" => "Uuid",
        "error" => "ErrorCode",
        "string" => "ByteString",
        _ => "Bytes",
    }
}

fn rust_type(ty: &Ty) -> String {
    match ty {
        Ty::Prim(p) => prim_rust(p).to_owned(),
        Ty::Array(t) => format!("Vec<{}>", rust_type(t)),
        Ty::Struct(n) => n.clone(),
    }
}

fn field_type(f: &Field) -> String {
    let t = rust_type(&f.ty);
    if f.nullable.is_empty() {
        t
    } else {
        format!("Option<{t}>")
    }
}

/// The `arbitrary(with = …)` helper for types that have no `Arbitrary` impl of their own.
fn arbitrary_with(f: &Field) -> Result<Option<&'static str>> {
    let opt = !f.nullable.is_empty();
    Ok(match (&f.ty, opt) {
        (Ty::Prim("string"), false) => Some("string"),
        (Ty::Prim("string"), true) => Some("opt_string"),
        (Ty::Prim("bytes" | "records"), false) => Some("bytes"),
        (Ty::Prim("bytes" | "records"), true) => Some("opt_bytes"),
        (Ty::Array(t), o) => match (&**t, o) {
            (Ty::Prim("string"), false) => Some("strings"),
            (Ty::Prim("string"), true) => Some("opt_strings"),
            (Ty::Prim("bytes" | "records"), _) => bail!("arrays of bytes are not supported"),
            _ => None,
        },
        _ => None,
    })
}

fn default_expr(f: &Field) -> String {
    let optional = !f.nullable.is_empty();
    if let Some(d) = &f.default {
        let v = match (&f.ty, d.as_str()) {
            (_, "null") => return "None".into(),
            (Ty::Prim("string"), s) => {
                let s = s.trim_matches('"');
                format!("ByteString::from_static({s:?})")
            }
            (Ty::Prim("error"), s) => format!("ErrorCode({s})"),
            (_, s) => s.to_owned(),
        };
        return if optional { format!("Some({v})") } else { v };
    }
    if optional {
        return "None".into();
    }
    match &f.ty {
        Ty::Prim("bool") => "false".into(),
        Ty::Prim("uuid") => "Uuid::ZERO".into(),
        Ty::Prim("error") => "ErrorCode::NONE".into(),
        Ty::Prim("string") => "ByteString::new()".into(),
        Ty::Prim("bytes" | "records") => "Bytes::new()".into(),
        Ty::Prim("f64") => "0.0".into(),
        Ty::Prim(_) => "0".into(),
        Ty::Array(_) => "Vec::new()".into(),
        Ty::Struct(n) => format!("{n}::default()"),
    }
}

/// The fewest bytes a value of `ty` takes on the wire, as an expression of `flex` and
/// `version`: an array's count is checked against it before the array is allocated.
fn min_size(ty: &Ty) -> String {
    match ty {
        Ty::Prim("i16" | "u16" | "error") => "2".into(),
        Ty::Prim("i32" | "u32") => "4".into(),
        Ty::Prim("i64" | "f64") => "8".into(),
        Ty::Prim("uuid") => "16".into(),
        Ty::Prim("string") => "if flex { 1 } else { 2 }".into(),
        Ty::Prim("bytes" | "records") | Ty::Array(_) => "if flex { 1 } else { 4 }".into(),
        Ty::Prim(_) => "1".into(),
        Ty::Struct(n) => format!("{n}::min_wire_size(version)"),
    }
}

/// The structures of `api` whose `min_wire_size` the decoders call: array elements, and the
/// structures they hold inline.
fn structs_needing_min_size(api: &ApiDef) -> Vec<String> {
    let all: Vec<&StructDef> = api.request.structs.iter().chain(&api.response.structs).collect();
    let mut needed: Vec<String> = Vec::new();
    let mut stack: Vec<String> = all
        .iter()
        .flat_map(|s| &s.fields)
        .filter_map(|f| match &f.ty {
            Ty::Array(t) => struct_name(t).map(str::to_owned),
            _ => None,
        })
        .collect();
    while let Some(name) = stack.pop() {
        if needed.contains(&name) {
            continue;
        }
        if let Some(s) = all.iter().find(|s| s.name == name) {
            for f in s.fields.iter().filter(|f| f.tag.is_none() && f.nullable.is_empty()) {
                if let Ty::Struct(n) = &f.ty {
                    stack.push(n.clone());
                }
            }
        }
        needed.push(name);
    }
    needed
}

/// `min_wire_size(version)` of a structure: its regular fields at their smallest (a nullable
/// structure as its null marker), and the tagged-field count of flexible versions.
fn gen_min_wire_size(out: &mut String, s: &StructDef, within: Range) -> Result<()> {
    writeln!(out, "    impl {} {{", s.name)?;
    writeln!(out, "        /// The fewest bytes this structure takes on the wire at `version`: an array's count is")?;
    writeln!(out, "        /// checked against it before the array is allocated.")?;
    writeln!(out, "        pub(crate) fn min_wire_size(version: i16) -> usize {{")?;
    writeln!(out, "            let flex = <Self as Message>::is_flexible(version);")?;
    writeln!(out, "            let mut n = 0;")?;
    for f in s.fields.iter().filter(|f| f.tag.is_none()) {
        let size = match f.ty {
            Ty::Struct(_) if !f.nullable.is_empty() => "1".to_owned(),
            _ => min_size(&f.ty),
        };
        writeln!(out, "            {}", wrap_cond(f.versions.condition(within), format!("n += {size};")))?;
    }
    writeln!(out, "            if flex {{ n += 1; }}")?;
    writeln!(out, "            n")?;
    writeln!(out, "        }}")?;
    writeln!(out, "    }}\n")?;
    Ok(())
}

fn wrap_cond(cond: Option<String>, body: String) -> String {
    match cond {
        None => body,
        Some(c) => format!("if {c} {{ {body} }}"),
    }
}

/// An expression that reads a non-null value of `ty` from `buf`, the last `reserved` bytes of
/// which (an expression) are promised to what follows.
fn decode_value(ty: &Ty, what: &str, reserved: &str) -> String {
    match ty {
        Ty::Prim("string") => format!("get_string(buf, flex, {what:?})?"),
        Ty::Prim("bytes" | "records") => format!("get_bytes(buf, flex, {what:?})?"),
        Ty::Prim("error") => format!("ErrorCode(get_i16(buf, {what:?})?)"),
        Ty::Prim(p) => format!("get_{}(buf, {what:?})?", if *p == "uuid" { "uuid" } else { p }),
        Ty::Struct(n) => format!("{n}::decode_before(buf, version, {reserved}, budget)?"),
        Ty::Array(_) => format!(
            "{{ let (n, min) = ({read}).ok_or(DecodeError::UnexpectedNull {{ what: {what:?} }})?; {fill} v }}",
            read = read_array_len(ty, what, reserved),
            fill = fill_array(ty, what, reserved),
        ),
    }
}

/// An expression of type `DecodeResult<Option<(count, min element size)>>` that reads an
/// array's count; the count must fit in the bytes not promised to what follows.
fn read_array_len(ty: &Ty, what: &str, reserved: &str) -> String {
    let Ty::Array(t) = ty else { unreachable!("read_array_len of a non-array") };
    format!(
        "{{ let min = {min}; get_array_len_before(buf, flex, min, {reserved}, {what:?})?.map(|n| (n, min)) }}",
        min = min_size(t)
    )
}

/// Statements that allocate `v` for the `n` elements (of at least `min` bytes each, charged
/// against the message's `budget`) of the array `ty` and read them. Each element is read with the
/// bytes of the elements after it promised, so that a forged count inside it cannot claim them too.
fn fill_array(ty: &Ty, what: &str, reserved: &str) -> String {
    let Ty::Array(t) = ty else { unreachable!("fill_array of a non-array") };
    let nested = matches!(**t, Ty::Struct(_) | Ty::Array(_));
    if nested {
        format!(
            "let mut v = budget.vec(n, {what:?})?; for i in 0..n {{ let r = {reserved} + (n - 1 - i) * min; v.push({}); }}",
            decode_value(t, what, "r")
        )
    } else {
        format!("let mut v = budget.vec(n, {what:?})?; for _ in 0..n {{ v.push({}); }}", decode_value(t, what, "0"))
    }
}

/// An expression that reads the field's value, which is an `Option` when the field is
/// nullable in some version.
fn decode_field(f: &Field, within: Range, what: &str, reserved: &str) -> String {
    if f.nullable.is_empty() {
        return decode_value(&f.ty, what, reserved);
    }
    let null_cond = f.nullable.condition(within);
    let nullable_read = match &f.ty {
        Ty::Prim("string") => format!("get_nullable_string(buf, flex, {what:?})?"),
        Ty::Prim("bytes" | "records") => format!("get_nullable_bytes(buf, flex, {what:?})?"),
        Ty::Struct(n) => format!(
            "if get_i8(buf, {what:?})? < 0 {{ None }} else {{ Some({n}::decode_before(buf, version, {reserved}, budget)?) }}"
        ),
        Ty::Array(_) => format!(
            "match {read} {{ None => None, Some((n, min)) => {{ {fill} Some(v) }} }}",
            read = read_array_len(&f.ty, what, reserved),
            fill = fill_array(&f.ty, what, reserved),
        ),
        Ty::Prim(_) => unreachable_prim(),
    };
    match null_cond {
        None => nullable_read,
        Some(c) => format!("if {c} {{ {nullable_read} }} else {{ Some({}) }}", decode_value(&f.ty, what, reserved)),
    }
}

fn unreachable_prim() -> String {
    // Numbers, bools and UUIDs are never nullable in Kafka's schemas; the parser lets the
    // generated code fail to compile if a description says otherwise.
    "compile_error!(\"nullable numeric field\")".into()
}

/// Statements that write the non-null value `v` (an expression of type `&T`) of `ty`; `what`
/// names the field in errors.
fn encode_value(ty: &Ty, v: &str, what: &str) -> String {
    match ty {
        Ty::Prim("string") => format!("put_string(buf, flex, {v}, {what:?})?;"),
        Ty::Prim("bytes") => format!("put_bytes(buf, flex, {v}, {what:?})?;"),
        Ty::Prim("records") => format!("put_records(buf, flex, {v}, {what:?})?;"),
        Ty::Prim("uuid") => format!("put_uuid(buf, {v});"),
        Ty::Prim("error") => format!("put_i16(buf, ({v}).0);"),
        Ty::Prim(p) => format!("put_{p}(buf, *{v});"),
        Ty::Struct(_) => format!("({v}).encode_to(buf, version)?;"),
        Ty::Array(t) => format!(
            "put_array_len(buf, flex, Some(({v}).len()), {what:?})?; for e in ({v}).iter() {{ {} }}",
            encode_value(t, "e", what)
        ),
    }
}

fn encode_field(f: &Field, within: Range, what: &str) -> String {
    let name = ident(&f.name);
    let v = format!("self.{name}");
    if f.nullable.is_empty() {
        return encode_value(&f.ty, &format!("&{v}"), what);
    }
    let null_cond = f.nullable.condition(within).unwrap_or_else(|| "true".into());
    let write_null = match &f.ty {
        Ty::Prim("string") => format!("put_nullable_string(buf, flex, None, {what:?})?;"),
        Ty::Prim("bytes" | "records") => format!("put_nullable_bytes(buf, flex, None, {what:?})?;"),
        Ty::Array(_) => format!("put_array_len(buf, flex, None, {what:?})?;"),
        Ty::Struct(_) => "put_i8(buf, -1);".to_owned(),
        Ty::Prim(_) => unreachable_prim(),
    };
    // A null where this version cannot express one is written as the empty value.
    let write_empty = match &f.ty {
        Ty::Prim("string") => format!("put_string(buf, flex, \"\", {what:?})?;"),
        Ty::Prim("bytes" | "records") => format!("put_bytes(buf, flex, &[], {what:?})?;"),
        Ty::Array(_) => format!("put_array_len(buf, flex, Some(0), {what:?})?;"),
        Ty::Struct(n) => format!("{n}::default().encode_to(buf, version)?;"),
        Ty::Prim(_) => unreachable_prim(),
    };
    let marker =
        if matches!(f.ty, Ty::Struct(_)) { format!("if {null_cond} {{ put_i8(buf, 1); }}") } else { String::new() };
    format!(
        "match &{v} {{ Some(x) => {{ {marker} {} }} None if {null_cond} => {{ {write_null} }} None => {{ {write_empty} }} }}",
        encode_value(&f.ty, "x", what)
    )
}

/// A condition that holds when the field's value differs from its default.
fn differs(f: &Field) -> String {
    match default_expr(f).as_str() {
        "Vec::new()" => format!("!self.{}.is_empty()", ident(&f.name)),
        d => format!("self.{} != {d}", ident(&f.name)),
    }
}

/// `if <the version carries the field> { <body> } else if <non-default> { <error> }`; `cond` is
/// the version condition (`None`: always carried).
fn carried_or_default(f: &Field, cond: Option<String>, body: String, what: &str) -> String {
    match cond {
        None => body,
        Some(c) if f.ignorable => format!("if {c} {{ {body} }}"),
        Some(c) => format!(
            "if {c} {{ {body} }} else if {} {{ return Err(EncodeError::FieldNotInVersion {{ what: {what:?}, version }}); }}",
            differs(f)
        ),
    }
}

/// Statements that reset the field to its default when `cond` (the versions that carry it) does
/// not hold, and otherwise apply `retain_version` to the structures it holds.
fn retain_field(f: &Field, cond: Option<String>) -> String {
    let name = ident(&f.name);
    let inner = match (&f.ty, f.nullable.is_empty()) {
        (Ty::Struct(_), true) => format!("self.{name}.retain_version(version);"),
        (Ty::Struct(_), false) => format!("if let Some(x) = &mut self.{name} {{ x.retain_version(version); }}"),
        (Ty::Array(t), nonnull) if matches!(**t, Ty::Struct(_)) => {
            if nonnull {
                format!("for e in self.{name}.iter_mut() {{ e.retain_version(version); }}")
            } else {
                format!(
                    "if let Some(v) = &mut self.{name} {{ for e in v.iter_mut() {{ e.retain_version(version); }} }}"
                )
            }
        }
        _ => String::new(),
    };
    let reset = format!("self.{name} = {};", default_expr(f));
    match cond {
        None => inner,
        // The encoder leaves an ignorable field out without an error: keep its value.
        Some(_) if f.ignorable && inner.is_empty() => String::new(),
        Some(c) if f.ignorable => format!("if {c} {{ {inner} }}"),
        Some(c) if inner.is_empty() => format!("if !({c}) {{ {reset} }}"),
        Some(c) => format!("if {c} {{ {inner} }} else {{ {reset} }}"),
    }
}

fn generate(apis: &[ApiDef]) -> Result<String> {
    let mut out = String::new();
    out.push_str(
        "//! Generated by `cargo xtask codegen` from `kafka-wire/schema/*.msg`. Do not edit.\n\
         #![allow(clippy::all, unused_mut, unused_variables, unused_comparisons)]\n\n\
         use bytes::Bytes;\n\
         use bytestring::ByteString;\n\n\
         use super::{Message, Request, VersionRange};\n\
         use crate::codec::primitives::*;\n\
         use crate::codec::{ApiKey, DecodeError, DecodeResult, EncodeError, EncodeResult, ErrorCode, UnknownTaggedFields, Uuid};\n\n",
    );
    for api in apis {
        let module = module_name(&api.name);
        writeln!(out, "/// {} (API key {}).", api.name, api.key)?;
        writeln!(out, "pub mod {module} {{")?;
        writeln!(out, "    use super::*;\n")?;
        let needing_min_size = structs_needing_min_size(api);
        for (m, is_request) in [(&api.request, true), (&api.response, false)] {
            for (i, s) in m.structs.iter().enumerate() {
                gen_struct(&mut out, api, m, s, i == 0, is_request)?;
                if needing_min_size.contains(&s.name) {
                    gen_min_wire_size(&mut out, s, m.versions)?;
                }
            }
        }
        writeln!(out, "}}")?;
        writeln!(out, "pub use {module}::{{{0}Request, {0}Response}};\n", api.name)?;
    }
    // Every `min_wire_size` against a valid encoding: a bound above one would refuse valid input.
    out.push_str(
        "#[cfg(test)]\nmod min_wire_size_tests {\n    use bytes::BytesMut;\n\n    use super::*;\n\n\
         /// `T::default()` (empty arrays and strings, null where nullable) encodes in exactly the\n\
         /// least size, at every version.\n\
         fn check<T: Message + Default>(min_wire_size: fn(i16) -> usize) {\n\
             for version in T::VERSIONS.min..=T::VERSIONS.max {\n\
                 let mut buf = BytesMut::new();\n\
                 T::default().encode(&mut buf, version).expect(\"a default value encodes\");\n\
                 assert_eq!(min_wire_size(version), buf.len(), \"{} v{version}\", std::any::type_name::<T>());\n\
             }\n\
         }\n\n\
         #[test]\n    fn min_wire_sizes_are_those_of_default_values() {\n",
    );
    for api in apis {
        let module = module_name(&api.name);
        for name in structs_needing_min_size(api) {
            writeln!(out, "        check::<{module}::{name}>({module}::{name}::min_wire_size);")?;
        }
    }
    out.push_str("    }\n}\n\n");
    // A list of every message type, for tests and fuzz targets.
    out.push_str(
        "/// Calls `$m!(ApiKey, RequestType, ResponseType)` once per API, for tests and fuzzers.\n\
         #[doc(hidden)]\n#[macro_export]\nmacro_rules! for_each_api {\n    ($m:ident) => {\n",
    );
    for api in apis {
        writeln!(
            out,
            "        $m!({key}, $crate::codec::messages::{n}Request, $crate::codec::messages::{n}Response);",
            key = api.key,
            n = api.name
        )?;
    }
    out.push_str("    };\n}\n");
    Ok(out)
}

fn gen_struct(
    out: &mut String,
    api: &ApiDef,
    m: &MessageDef,
    s: &StructDef,
    top: bool,
    is_request: bool,
) -> Result<()> {
    let within = m.versions;
    writeln!(out, "    /// {}", struct_doc(api, m, s, top, is_request))?;
    writeln!(out, "    #[derive(Clone, Debug, PartialEq)]")?;
    writeln!(out, "    #[cfg_attr(feature = \"arbitrary\", derive(arbitrary::Arbitrary))]")?;
    writeln!(out, "    pub struct {} {{", s.name)?;
    for f in &s.fields {
        writeln!(out, "        /// {}", field_doc(f))?;
        if let Some(with) = arbitrary_with(f)? {
            writeln!(out, "        #[cfg_attr(feature = \"arbitrary\", arbitrary(with = crate::codec::arb::{with}))]")?;
        }
        writeln!(out, "        pub {}: {},", ident(&f.name), field_type(f))?;
    }
    writeln!(out, "        /// Tagged fields this codec does not know, kept so that they round-trip.")?;
    writeln!(out, "        pub unknown_tagged_fields: UnknownTaggedFields,")?;
    writeln!(out, "    }}\n")?;

    writeln!(out, "    impl Default for {} {{", s.name)?;
    writeln!(out, "        fn default() -> Self {{")?;
    writeln!(out, "            Self {{")?;
    for f in &s.fields {
        writeln!(out, "                {}: {},", ident(&f.name), default_expr(f))?;
    }
    writeln!(out, "                unknown_tagged_fields: UnknownTaggedFields::new(),")?;
    writeln!(out, "            }}\n        }}\n    }}\n")?;

    writeln!(out, "    impl Message for {} {{", s.name)?;
    writeln!(
        out,
        "        const VERSIONS: VersionRange = VersionRange {{ min: {}, max: {} }};",
        m.versions.min, m.versions.max
    )?;
    match m.flexible {
        Some(v) => writeln!(out, "        const FLEXIBLE_FROM: Option<i16> = Some({v});")?,
        None => writeln!(out, "        const FLEXIBLE_FROM: Option<i16> = None;")?,
    }
    let regular: Vec<&Field> = s.fields.iter().filter(|f| f.tag.is_none()).collect();
    let tagged: Vec<&Field> = s.fields.iter().filter(|f| f.tag.is_some()).collect();

    // encode
    writeln!(out, "\n        fn encode_to(&self, buf: &mut Encoder<'_>, version: i16) -> EncodeResult<()> {{")?;
    if top {
        writeln!(out, "            if !Self::VERSIONS.contains(version) {{")?;
        writeln!(
            out,
            "                return Err(EncodeError::UnsupportedVersion {{ api: ApiKey({}), version }});",
            api.key
        )?;
        writeln!(out, "            }}")?;
    }
    writeln!(out, "            let flex = Self::is_flexible(version);")?;
    for f in &regular {
        let what = format!("{}.{}", s.name, f.name);
        let body = encode_field(f, within, &what);
        writeln!(out, "            {}", carried_or_default(f, f.versions.condition(within), body, &what))?;
    }
    // A tagged field (or an unknown one) in a version that does not carry it would be dropped.
    for f in tagged.iter().filter(|f| !f.ignorable) {
        let what = format!("{}.{}", s.name, f.name);
        writeln!(
            out,
            "            if !({}) && {} {{ return Err(EncodeError::FieldNotInVersion {{ what: {what:?}, version }}); }}",
            tagged_version_condition(f, within),
            differs(f)
        )?;
    }
    writeln!(
        out,
        "            if !flex && !self.unknown_tagged_fields.is_empty() {{ \
         return Err(EncodeError::FieldNotInVersion {{ what: \"{}.unknown_tagged_fields\", version }}); }}",
        s.name
    )?;
    writeln!(out, "            if flex {{")?;
    writeln!(
        out,
        "                let (unknown, mut n) = self.unknown_tagged_fields.checked_raw(\"{}.unknown_tagged_fields\")?;",
        s.name
    )?;
    for f in &tagged {
        let cond = tag_condition(f, within);
        writeln!(out, "                if {cond} {{ n += 1; }}")?;
    }
    writeln!(out, "                put_tagged_count(buf, n, \"{}.tagged fields\")?;", s.name)?;
    for f in &tagged {
        let cond = tag_condition(f, within);
        let what = format!("{}.{}", s.name, f.name);
        writeln!(
            out,
            "                if {cond} {{ put_tagged_field(buf, {tag}, {what:?}, |buf| {{ {body} Ok(()) }})?; }}",
            tag = f.tag.unwrap_or_default(),
            body = encode_field(f, within, &what)
        )?;
    }
    writeln!(out, "                buf.extend_from_slice(unknown);")?;
    writeln!(out, "            }}")?;
    writeln!(out, "            Ok(())")?;
    writeln!(out, "        }}")?;

    // retain_version
    writeln!(out, "\n        #[cfg(feature = \"arbitrary\")]")?;
    writeln!(out, "        fn retain_version(&mut self, version: i16) {{")?;
    writeln!(out, "            let flex = Self::is_flexible(version);")?;
    for f in &regular {
        writeln!(out, "            {}", retain_field(f, f.versions.condition(within)))?;
    }
    for f in &tagged {
        writeln!(out, "            {}", retain_field(f, Some(tagged_version_condition(f, within))))?;
    }
    writeln!(out, "            if !flex {{ self.unknown_tagged_fields.clear(); }}")?;
    writeln!(out, "        }}")?;

    writeln!(out, "\n        fn decode(buf: &mut Bytes, version: i16) -> DecodeResult<Self> {{")?;
    writeln!(out, "            Self::decode_before(buf, version, 0, &mut DecodeBudget::for_input(buf.len()))")?;
    writeln!(out, "        }}")?;
    writeln!(out, "    }}\n")?;

    // decode_before
    writeln!(out, "    impl {} {{", s.name)?;
    writeln!(out, "        /// Reads the structure at `version` from the front of `buf`, whose last `reserved` bytes")?;
    writeln!(
        out,
        "        /// are promised to what follows it: its arrays' counts must fit in the bytes before them,"
    )?;
    writeln!(out, "        /// and their elements in what is left of the message's `budget`.")?;
    writeln!(
        out,
        "        pub(crate) fn decode_before(buf: &mut Bytes, version: i16, reserved: usize, budget: &mut DecodeBudget) -> DecodeResult<Self> {{"
    )?;
    if top {
        writeln!(out, "            if !Self::VERSIONS.contains(version) {{")?;
        writeln!(
            out,
            "                return Err(DecodeError::UnsupportedVersion {{ api: ApiKey({}), version }});",
            api.key
        )?;
        writeln!(out, "            }}")?;
    }
    writeln!(out, "            let flex = Self::is_flexible(version);")?;
    writeln!(out, "            let mut this = Self::default();")?;
    for f in &regular {
        let what = format!("{}.{}", s.name, f.name);
        let stmt = format!("this.{} = {};", ident(&f.name), decode_field(f, within, &what, "reserved"));
        writeln!(out, "            {}", wrap_cond(f.versions.condition(within), stmt))?;
    }
    writeln!(out, "            if flex {{")?;
    writeln!(out, "                this.unknown_tagged_fields = get_tagged_fields(buf, |tag, buf| {{")?;
    writeln!(out, "                    match tag {{")?;
    for f in &tagged {
        let what = format!("{}.{}", s.name, f.name);
        let cond = f.tagged.intersect(f.versions).condition(within).unwrap_or_else(|| "true".into());
        writeln!(
            out,
            "                        {tag} if {cond} => {{ this.{name} = {expr}; Ok(true) }}",
            tag = f.tag.unwrap_or_default(),
            name = ident(&f.name),
            // A tagged field's bytes were split off `buf`: nothing after them is promised.
            expr = decode_field(f, within, &what, "0")
        )?;
    }
    writeln!(out, "                        _ => Ok(false),")?;
    writeln!(out, "                    }}")?;
    writeln!(out, "                }})?;")?;
    writeln!(out, "            }}")?;
    writeln!(out, "            Ok(this)")?;
    writeln!(out, "        }}")?;
    writeln!(out, "    }}\n")?;

    if top && is_request {
        writeln!(out, "    impl Request for {} {{", s.name)?;
        writeln!(out, "        const API_KEY: ApiKey = ApiKey::{};", snake_upper(&api.name))?;
        writeln!(out, "        type Response = {}Response;", api.name)?;
        writeln!(out, "    }}\n")?;
    }
    Ok(())
}

/// A tagged field is written when its version matches and its value differs from the default.
fn tag_condition(f: &Field, within: Range) -> String {
    let ver = f.tagged.intersect(f.versions).condition(within);
    match ver {
        None => differs(f),
        Some(c) => format!("{c} && {}", differs(f)),
    }
}

/// The versions in which a tagged field can be written: flexible ones, within its versions.
fn tagged_version_condition(f: &Field, within: Range) -> String {
    match f.tagged.intersect(f.versions).condition(within) {
        None => "flex".into(),
        Some(c) => format!("flex && {c}"),
    }
}

/// The doc comment of a generated struct: which message it is or belongs to, and the versions
/// and flexible versions of that message, as the schema states them.
fn struct_doc(api: &ApiDef, m: &MessageDef, s: &StructDef, top: bool, is_request: bool) -> String {
    let flexible = match m.flexible {
        Some(v) => format!("flexible versions {v}+"),
        None => "no flexible versions".to_owned(),
    };
    let what = if top {
        let side = if is_request { "request" } else { "response" };
        format!("{} {side} (API key {})", api.name, api.key)
    } else {
        // A struct both sides declare alike is generated once, on the request side.
        let mut users = Vec::new();
        let mut sides = Vec::new();
        for (msg, name) in [(&api.request, "request"), (&api.response, "response")] {
            let before = users.len();
            for o in &msg.structs {
                for f in o.fields.iter().filter(|f| struct_name(&f.ty) == Some(s.name.as_str())) {
                    users.push(format!("`{}.{}`", o.name, ident(&f.name)));
                }
            }
            if users.len() > before {
                sides.push(name);
            }
        }
        format!("Part of the {} {} (API key {}), used by {}", api.name, sides.join(" and "), api.key, users.join(", "))
    };
    format!("{what}: versions {}, {flexible}.", show_range(m.versions))
}

/// The wire type of a field as Kafka's schemas name it.
fn wire_type(ty: &Ty) -> String {
    match ty {
        Ty::Prim(p) => match *p {
            "error" => "int16 error code",
            "bool" => "bool",
            "i8" => "int8",
            "i16" => "int16",
            "i32" => "int32",
            "i64" => "int64",
            "u16" => "uint16",
            "u32" => "uint32",
            "f64" => "float64",
            "uuid" => "uuid",
            "string" => "string",
            "bytes" => "bytes",
            _ => "records",
        }
        .to_owned(),
        Ty::Array(t) => format!("array of {}", wire_type(t)),
        Ty::Struct(n) => format!("`{n}`"),
    }
}

/// The doc comment of a generated field: its wire type, the versions that carry it,
/// nullability, explicit default and tag, from the schema.
fn field_doc(f: &Field) -> String {
    let mut notes = vec![format!("`{}`: {}", ident(&f.name), wire_type(&f.ty))];
    if f.versions == Range::ALL {
        notes.push("all versions".into());
    } else if f.versions.is_empty() {
        notes.push("no version".into());
    } else {
        notes.push(format!("versions {}", show_range(f.versions)));
    }
    if !f.nullable.is_empty() {
        if f.nullable == f.versions {
            notes.push("nullable".into());
        } else {
            notes.push(format!("nullable in versions {}", show_range(f.nullable)));
        }
    }
    if let Some(d) = &f.default {
        notes.push(format!("default {d}"));
    }
    if let Some(t) = f.tag {
        if f.tagged == f.versions {
            notes.push(format!("tagged (tag {t})"));
        } else {
            notes.push(format!("tagged (tag {t}) in versions {}", show_range(f.tagged)));
        }
    }
    if f.ignorable && f.versions != Range::ALL {
        notes.push("left out of other versions without an error (ignorable)".into());
    }
    format!("{}.", notes.join(", "))
}

fn show_range(r: Range) -> String {
    if r.max == i16::MAX {
        format!("{}+", r.min)
    } else {
        format!("{}-{}", r.min, r.max)
    }
}
