//! Resource templates: `"product:{id}"`, `"seat:{req.concert}:{req.0}"`, `{{`/`}}` for braces.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote_spanned};
use syn::LitStr;

/// A parsed template: a `format!` string and one expression per placeholder.
pub(crate) struct Template {
    pub format: String,
    pub args: Vec<TokenStream>,
}

/// Parses `template`, checking every placeholder's root against `parameters` (the function's
/// parameter names, `self` included). Errors point into the string where the compiler allows.
pub(crate) fn parse(template: &LitStr, parameters: &[String]) -> syn::Result<Template> {
    let text = template.value();
    let mut format = String::with_capacity(text.len());
    let mut args = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            '{' if chars.peek().map(|(_, next)| *next) == Some('{') => {
                chars.next();
                format.push_str("{{");
            }
            '}' if chars.peek().map(|(_, next)| *next) == Some('}') => {
                chars.next();
                format.push_str("}}");
            }
            '}' => {
                return Err(error_at(
                    template,
                    at,
                    at + 1,
                    "unmatched `}` in resource; write `}}` for a literal brace",
                ));
            }
            '{' => {
                let start = at + 1;
                let end = loop {
                    match chars.next() {
                        Some((close, '}')) => break close,
                        Some(_) => {}
                        None => {
                            return Err(error_at(
                                template,
                                at,
                                text.len(),
                                "unclosed `{` in resource; write `{{` for a literal brace",
                            ))
                        }
                    }
                };
                args.push(placeholder(template, &text[start..end], start, parameters)?);
                format.push_str("{}");
            }
            other => format.push(other),
        }
    }
    Ok(Template { format, args })
}

/// `name`, `name.field`, `name.0`, …: an expression borrowing the value to format.
fn placeholder(
    template: &LitStr,
    path: &str,
    offset: usize,
    parameters: &[String],
) -> syn::Result<TokenStream> {
    let span = subspan(template, offset, offset + path.len());
    if path.contains(':') {
        return Err(syn::Error::new(
            span,
            format!("`{{{path}}}` in resource: format specs are not supported (not a field name either); placeholders are formatted with `Display`"),
        ));
    }
    let mut parts = path.split('.');
    let root = parts.next().unwrap_or_default().trim();
    if root.is_empty() {
        return Err(syn::Error::new(
            span,
            "empty `{}` in resource: name a parameter, e.g. `{id}`",
        ));
    }
    if !parameters.iter().any(|parameter| parameter == root) {
        let known = if parameters.is_empty() {
            "the function has no parameters".to_string()
        } else {
            format!("parameters: {}", parameters.join(", "))
        };
        return Err(syn::Error::new(
            span,
            format!("`{root}` in resource is not a parameter of this function ({known})"),
        ));
    }
    let mut expr = if root == "self" {
        quote_spanned!(span=> self)
    } else {
        let ident = format_ident!("{}", root, span = span);
        quote_spanned!(span=> #ident)
    };
    for member in parts {
        let member = member.trim();
        if let Ok(index) = member.parse::<u32>() {
            let index = syn::Index { index, span };
            expr = quote_spanned!(span=> #expr.#index);
        } else if syn::parse_str::<syn::Ident>(member).is_ok() {
            let ident = format_ident!("{}", member, span = span);
            expr = quote_spanned!(span=> #expr.#ident);
        } else {
            return Err(syn::Error::new(
                span,
                format!("`{path}` in resource: `{member}` is not a field name or tuple index (format specs are not supported)"),
            ));
        }
    }
    Ok(quote_spanned!(span=> &#expr))
}

/// The span of `start..end` (byte offsets into the string's value) when the compiler can give
/// one (nightly), else the whole literal. Offsets shift by one for the opening quote; escapes
/// are rare in resource names and would only shift the underline.
fn subspan(template: &LitStr, start: usize, end: usize) -> Span {
    template
        .token()
        .subspan(start + 1..end + 1)
        .unwrap_or_else(|| template.span())
}

fn error_at(template: &LitStr, start: usize, end: usize, message: &str) -> syn::Error {
    syn::Error::new(subspan(template, start, end), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str, parameters: &[&str]) -> syn::Result<Template> {
        let literal = LitStr::new(text, Span::call_site());
        let parameters: Vec<String> = parameters.iter().map(|p| p.to_string()).collect();
        parse(&literal, &parameters)
    }

    fn args(template: &Template) -> Vec<String> {
        template
            .args
            .iter()
            .map(|arg| arg.to_string().replace(' ', ""))
            .collect()
    }

    #[test]
    fn placeholders_become_borrowed_expressions() {
        let template =
            parse_text("seat:{path.0}:{body.user_id}:{id}", &["path", "body", "id"]).unwrap();
        assert_eq!(template.format, "seat:{}:{}:{}");
        assert_eq!(args(&template), ["&path.0", "&body.user_id", "&id"]);
    }

    #[test]
    fn doubled_braces_are_literal() {
        let template = parse_text("{{literal}}:{id}", &["id"]).unwrap();
        assert_eq!(template.format, "{{literal}}:{}");
        assert_eq!(args(&template), ["&id"]);
    }

    #[test]
    fn self_fields_are_allowed_in_methods() {
        let template = parse_text("job:{self.name}", &["self"]).unwrap();
        assert_eq!(args(&template), ["&self.name"]);
    }

    #[test]
    fn mistakes_are_errors_that_say_what_to_do() {
        let cases = [
            ("{nope}", "not a parameter"),
            ("{}", "empty"),
            ("{id", "unclosed"),
            ("id}", "unmatched"),
            ("{id:?}", "not a field name"),
            ("{id.}", "not a field name"),
        ];
        for (text, expected) in cases {
            let error = parse_text(text, &["id"])
                .err()
                .unwrap_or_else(|| panic!("{text} parsed"));
            assert!(error.to_string().contains(expected), "{text}: {error}");
        }
    }
}
