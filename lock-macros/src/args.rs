//! Parsing `#[distributed_lock(...)]`'s arguments with `syn::meta::parser`.

use proc_macro2::Span;
use syn::meta::ParseNestedMeta;
use syn::{Expr, Ident, LitBool, LitInt, LitStr, Path};

const VALID_ARGUMENTS: &str = "resource, ttl_ms, wait_ms, auto_extend, fair, min_hold_ms, \
     cancel_on_lost, guard, locker, axum, crate";

/// A TTL of zero, as a literal here or as a constant when the code is compiled.
pub(crate) const ZERO_TTL: &str =
    "`ttl_ms` must be greater than 0: a lock that expires at once protects nothing";

/// What to lock: one template, or a list whose locks are held together.
pub(crate) enum Resources {
    One(LitStr),
    Many(Vec<LitStr>),
}

/// A duration in milliseconds: a literal, checked here, or a `u64` constant's path, checked
/// by the compiler (see `expand.rs`), so an application can name its TTL once.
pub(crate) enum Millis {
    Literal(u64),
    Constant(Path),
}

/// The arguments, each with the span of its key for error messages.
#[derive(Default)]
pub(crate) struct LockArgs {
    pub resource: Option<Resources>,
    pub ttl_ms: Option<Millis>,
    pub wait_ms: Option<Millis>,
    pub min_hold_ms: Option<Millis>,
    pub auto_extend: Option<bool>,
    pub fair: Option<bool>,
    pub cancel_on_lost: Option<bool>,
    pub axum: Option<bool>,
    pub guard: Option<Ident>,
    pub locker: Option<Expr>,
    pub krate: Option<Path>,
}

impl LockArgs {
    /// Parses one `key = value` or bare `flag` (called by `syn::meta::parser`).
    pub(crate) fn parse_one(&mut self, meta: ParseNestedMeta) -> syn::Result<()> {
        let key = meta
            .path
            .get_ident()
            .map(Ident::to_string)
            .unwrap_or_default();
        let duplicate = || meta.error(format!("duplicate argument `{key}`"));
        match key.as_str() {
            "resource" => {
                if self.resource.is_some() {
                    return Err(duplicate());
                }
                let expected = |span| {
                    syn::Error::new(
                        span,
                        "`resource` expects a string template, e.g. `resource = \"product:{id}\"`, \
                         or a list of them, e.g. `resource = [\"balance:{from}\", \"balance:{to}\"]`",
                    )
                };
                let value = meta.value()?;
                if value.peek(syn::token::Bracket) {
                    let content;
                    let brackets = syn::bracketed!(content in value);
                    let list = content
                        .parse_terminated(<LitStr as syn::parse::Parse>::parse, syn::Token![,])
                        .map_err(|err| expected(err.span()))?;
                    if list.is_empty() {
                        return Err(syn::Error::new(
                            brackets.span.join(),
                            "`resource = []` locks nothing: name at least one resource",
                        ));
                    }
                    self.resource = Some(Resources::Many(list.into_iter().collect()));
                } else {
                    let one: LitStr = value.parse().map_err(|err| expected(err.span()))?;
                    self.resource = Some(Resources::One(one));
                }
            }
            "ttl_ms" | "wait_ms" | "min_hold_ms" => {
                let slot = match key.as_str() {
                    "ttl_ms" => &mut self.ttl_ms,
                    "wait_ms" => &mut self.wait_ms,
                    _ => &mut self.min_hold_ms,
                };
                if slot.is_some() {
                    return Err(duplicate());
                }
                let value = meta.value()?;
                if !value.peek(LitInt) {
                    let constant: Path = value.parse().map_err(|err| {
                        syn::Error::new(
                            err.span(),
                            format!(
                                "`{key}` expects milliseconds: an integer literal, e.g. `{key} = 5000`, \
                                 or the path of a `u64` constant, e.g. `{key} = LOCK_TTL_MS`"
                            ),
                        )
                    })?;
                    *slot = Some(Millis::Constant(constant));
                    return Ok(());
                }
                let literal: LitInt = value.parse()?;
                let millis: u64 = literal.base10_parse()?;
                if key == "ttl_ms" && millis == 0 {
                    return Err(syn::Error::new(literal.span(), ZERO_TTL));
                }
                *slot = Some(Millis::Literal(millis));
            }
            "auto_extend" | "fair" | "cancel_on_lost" | "axum" => {
                let slot = match key.as_str() {
                    "fair" => &mut self.fair,
                    "cancel_on_lost" => &mut self.cancel_on_lost,
                    "axum" => &mut self.axum,
                    _ => &mut self.auto_extend,
                };
                if slot.is_some() {
                    return Err(duplicate());
                }
                // A bare flag means `true`; `flag = false` is accepted for generated code.
                let value = if meta.input.peek(syn::Token![=]) {
                    let literal: LitBool = meta.value()?.parse().map_err(|err| {
                        syn::Error::new(
                            err.span(),
                            format!("`{key}` is a flag: write `{key}` or `{key} = true`"),
                        )
                    })?;
                    literal.value
                } else {
                    true
                };
                *slot = Some(value);
            }
            "guard" => {
                if self.guard.is_some() {
                    return Err(duplicate());
                }
                let ident: Ident = meta.value()?.parse().map_err(|err| {
                    syn::Error::new(
                        err.span(),
                        "`guard` expects a variable name, e.g. `guard = lock`",
                    )
                })?;
                self.guard = Some(ident);
            }
            "locker" => {
                if self.locker.is_some() {
                    return Err(duplicate());
                }
                self.locker = Some(meta.value()?.parse()?);
            }
            "crate" => {
                if self.krate.is_some() {
                    return Err(duplicate());
                }
                let path: LitStr = meta.value()?.parse()?;
                self.krate = Some(path.parse()?);
            }
            _ => {
                let shown = meta
                    .path
                    .get_ident()
                    .map_or_else(|| "this".to_string(), |ident| format!("`{ident}`"));
                return Err(meta.error(format!(
                    "unknown argument {shown}; valid arguments: {VALID_ARGUMENTS}"
                )));
            }
        }
        Ok(())
    }

    /// The resource template, or an error at the attribute when it is missing.
    pub(crate) fn require_resource(&self) -> syn::Result<&Resources> {
        self.resource.as_ref().ok_or_else(|| {
            syn::Error::new(
                Span::call_site(),
                "missing `resource = \"...\"`: name what to lock, e.g. `resource = \"product:{id}\"`",
            )
        })
    }
}
