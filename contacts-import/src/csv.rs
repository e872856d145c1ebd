//! The contacts CSV: parsing what a browser uploads, and generating large files.
//!
//! A file has a header naming at least the columns `name`, `email` and `country` (in any order;
//! others are ignored), then one contact a line. Fields may be quoted (`"Doe, Jane"`, with `""`
//! for a quote inside). Blank lines are skipped.

use serde::{Deserialize, Serialize};

/// One contact as read from the file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// Its line in the file, counting the header as line 1 (it makes the contact's id).
    pub line: u64,
    /// The name.
    pub name: String,
    /// The e-mail address.
    pub email: String,
    /// The country code (ISO 3166 alpha-2, as in the `countries` store).
    pub country: String,
}

/// Why a file was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CsvError {
    /// No header line.
    #[error("the file is empty: a header line (name,email,country) is expected")]
    Empty,
    /// The header lacks a column.
    #[error("the header has no {0:?} column (it must name name, email and country)")]
    MissingColumn(&'static str),
    /// A line has fewer fields than the header says.
    #[error("line {line}: {found} fields, the header has {expected}")]
    ShortLine {
        /// The line.
        line: u64,
        /// Fields found.
        found: usize,
        /// Fields in the header.
        expected: usize,
    },
    /// A quoted field is not closed on its line.
    #[error("line {0}: a quoted field is not closed")]
    OpenQuote(u64),
    /// More contacts than allowed.
    #[error("more than {0} contacts")]
    TooMany(usize),
    /// A header and no contact.
    #[error("the file has a header and no contact")]
    NoContacts,
}

/// The fields of one line.
fn fields(line: &str, number: u64) -> Result<Vec<String>, CsvError> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(CsvError::OpenQuote(number)),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            // Anything between the closing quote and the comma is kept as written.
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                field.push(c);
                chars.next();
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                field.push(c);
                chars.next();
            }
        }
        out.push(field.trim().to_owned());
        if chars.next().is_none() {
            return Ok(out);
        }
    }
}

/// The contacts of `text`, at most `max`.
pub fn parse(text: &str, max: usize) -> Result<Vec<Contact>, CsvError> {
    let mut lines = text.lines().enumerate().map(|(i, l)| (i as u64 + 1, l.trim_end_matches('\r')));
    let (_, header) = lines.find(|(_, l)| !l.trim().is_empty()).ok_or(CsvError::Empty)?;
    let header: Vec<String> = fields(header, 1)?.into_iter().map(|h| h.to_ascii_lowercase()).collect();
    let column = |name: &'static str| header.iter().position(|h| h == name).ok_or(CsvError::MissingColumn(name));
    let (name, email, country) = (column("name")?, column("email")?, column("country")?);
    let needed = name.max(email).max(country) + 1;
    let mut contacts = Vec::new();
    for (number, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        if contacts.len() == max {
            return Err(CsvError::TooMany(max));
        }
        let f = fields(line, number)?;
        if f.len() < needed {
            return Err(CsvError::ShortLine { line: number, found: f.len(), expected: header.len() });
        }
        contacts.push(Contact {
            line: number,
            name: f[name].clone(),
            email: f[email].clone(),
            country: f[country].to_ascii_uppercase(),
        });
    }
    if contacts.is_empty() {
        return Err(CsvError::NoContacts);
    }
    Ok(contacts)
}

const FIRST: [&str; 16] = [
    "Ada", "Ben", "Chen", "Dana", "Emeka", "Fatima", "Goran", "Hana", "Ivan", "Jia", "Kofi", "Lena", "Mateo", "Nora",
    "Omar", "Priya",
];
const LAST: [&str; 12] =
    ["Smith", "Okafor", "Nakamura", "Silva", "Kowalski", "Haddad", "Larsen", "Moreau", "Rossi", "Novak", "Kim", "Diaz"];

/// A CSV of `contacts` contacts (deterministic), each in one of `countries` (codes), with a
/// header. `countries` must not be empty.
pub fn generate(contacts: usize, countries: &[&str]) -> String {
    let mut out = String::with_capacity(contacts * 48 + 32);
    out.push_str("name,email,country\n");
    for i in 0..contacts {
        let (first, last) = (FIRST[i % FIRST.len()], LAST[(i / FIRST.len()) % LAST.len()]);
        let country = countries[(i * 7 + i / 13) % countries.len()];
        out.push_str(&format!(
            "{first} {last},{}.{}.{i}@example.com,{country}\n",
            first.to_ascii_lowercase(),
            last.to_ascii_lowercase()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_in_any_order_quotes_and_blank_lines() {
        let text = "Country,Name,Email,Note\r\n\r\nfr,\"Doe, Jane\",jane@example.com,x\nDE,\"Say \"\"hi\"\"\",s@example.com,\n";
        let contacts = parse(text, 10).unwrap();
        assert_eq!(contacts.len(), 2);
        assert_eq!(
            contacts[0],
            Contact { line: 3, name: "Doe, Jane".into(), email: "jane@example.com".into(), country: "FR".into() }
        );
        assert_eq!(contacts[1].name, "Say \"hi\"");
        assert_eq!(contacts[1].line, 4);
    }

    #[test]
    fn bad_files_are_refused_with_their_cause() {
        assert_eq!(parse("", 10), Err(CsvError::Empty));
        assert_eq!(parse("name,email\nA,a@b", 10), Err(CsvError::MissingColumn("country")));
        assert_eq!(
            parse("name,email,country\nA,a@b\n", 10),
            Err(CsvError::ShortLine { line: 2, found: 2, expected: 3 })
        );
        assert_eq!(parse("name,email,country\n\"A,a@b,FR\n", 10), Err(CsvError::OpenQuote(2)));
        assert_eq!(parse("name,email,country\n", 10), Err(CsvError::NoContacts));
        assert_eq!(parse("name,email,country\nA,a@b,FR\nB,b@b,FR\n", 1), Err(CsvError::TooMany(1)));
    }

    #[test]
    fn a_generated_file_parses_back_to_as_many_contacts() {
        let text = generate(1000, &["FR", "DE"]);
        let contacts = parse(&text, 1000).unwrap();
        assert_eq!(contacts.len(), 1000);
        assert!(contacts.iter().all(|c| c.country == "FR" || c.country == "DE"));
        let emails: std::collections::HashSet<_> = contacts.iter().map(|c| c.email.as_str()).collect();
        assert_eq!(emails.len(), 1000, "every generated e-mail is distinct");
    }
}
