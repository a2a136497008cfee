//! Code generation: keep the caller's signature, attributes and visibility; rewrite the body.

use crate::args::{LockArgs, Millis, Resources, ZERO_TTL};
use crate::template;
use proc_macro2::TokenStream;
use quote::{quote, ToTokens};
use syn::visit::Visit;
use syn::{parse_quote, FnArg, ItemFn, ReturnType, Type};

/// Entry point: on any error, emit the item untouched plus `compile_error!`, so the rest of the
/// crate (and the IDE) keeps seeing the function.
pub(crate) fn distributed_lock(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut lock_args = LockArgs::default();
    let parser = syn::meta::parser(|meta| lock_args.parse_one(meta));
    if let Err(err) = syn::parse::Parser::parse2(parser, args) {
        return item_with_error(item, err);
    }
    let function: ItemFn = match syn::parse2(item.clone()) {
        Ok(function) => function,
        Err(err) => return item_with_error(item, err),
    };
    match expand(lock_args, function) {
        Ok(tokens) => tokens,
        Err(err) => item_with_error(item, err),
    }
}

fn item_with_error(item: TokenStream, err: syn::Error) -> TokenStream {
    let error = err.to_compile_error();
    quote!(#item #error)
}

fn expand(args: LockArgs, mut function: ItemFn) -> syn::Result<TokenStream> {
    if function.sig.asyncness.is_none() {
        return Err(syn::Error::new_spanned(
            function.sig.fn_token,
            "`#[distributed_lock]` needs an `async fn`: acquiring the lock is awaited",
        ));
    }
    let resources = args.require_resource()?;
    let parameters = parameter_names(&function);
    let templates = match resources {
        Resources::One(resource) => vec![template::parse(resource, &parameters)?],
        Resources::Many(list) => list
            .iter()
            .map(|resource| template::parse(resource, &parameters))
            .collect::<syn::Result<_>>()?,
    };
    let axum = args.axum.unwrap_or(false);
    let krate: syn::Path = args
        .krate
        .clone()
        .unwrap_or_else(|| parse_quote!(::fencelock));
    let private = quote!(#krate::__private);

    let locker = match &args.locker {
        Some(expr) => quote!(&(#expr)),
        None => {
            if let Some(receiver) = function.sig.receiver() {
                return Err(syn::Error::new_spanned(
                    receiver,
                    "methods need `locker = ...` (e.g. `locker = self.locker`): without it the \
                     Locker comes from the web framework's request data, which only handlers \
                     can reach",
                ));
            }
            // Handlers: one more extractor, which finds the Locker in actix app data or in an
            // axum request extension.
            let extractor = if axum {
                quote!(#private::AxumLocker)
            } else {
                quote!(#private::AppLocker)
            };
            let position = if axum {
                // axum lets only the last argument read the body: put ours first.
                0
            } else {
                function.sig.inputs.len()
            };
            function
                .sig
                .inputs
                .insert(position, parse_quote!(__dl_app_locker: #extractor));
            quote!(&*__dl_app_locker)
        }
    };

    // Unset durations are `None`: the runtime's `LockOptions::new()` defaults apply. A
    // constant is evaluated at compile time (a non-constant path does not compile); a TTL
    // constant of zero fails the build where the function is compiled to code (`cargo check`
    // does not evaluate it), and is refused as `InvalidOptions` at run time in any case.
    let some_ms = |ms: &Option<Millis>, nonzero: bool| match ms {
        Some(Millis::Literal(ms)) => quote!(::core::option::Option::Some(#ms)),
        Some(Millis::Constant(path)) => {
            let check = nonzero.then(|| quote!(::core::assert!(__dl_ms > 0, #ZERO_TTL);));
            quote!(::core::option::Option::Some(const {
                let __dl_ms: u64 = #path;
                #check
                __dl_ms
            }))
        }
        None => quote!(::core::option::Option::None),
    };
    let ttl_ms = some_ms(&args.ttl_ms, true);
    let wait_ms = some_ms(&args.wait_ms, false);
    let min_hold_ms = some_ms(&args.min_hold_ms, false);
    let auto_extend = args.auto_extend.unwrap_or(false);
    let fair = args.fair.unwrap_or(false);
    let options = quote!(#private::options(#ttl_ms, #wait_ms, #auto_extend, #fair, #min_hold_ms));

    let bind_guard = args
        .guard
        .as_ref()
        .map(|ident| quote!(let #ident = &__dl_guard;));

    // How a lock failure leaves the function, by return type.
    let (on_lock_error, output, fake_return) = match &function.sig.output {
        ReturnType::Type(_, ty) if contains_impl_trait(ty) => {
            // An opaque `impl Responder` / `impl IntoResponse`: the failure response and the
            // body's value must share one type, so both go into an `Either`.
            let (either, response) = if axum {
                (
                    quote!(#private::AxumEither),
                    quote!(#private::axum_lock_error_response),
                )
            } else {
                (
                    quote!(#private::Either),
                    quote!(#private::lock_error_response),
                )
            };
            (
                quote!(return #either::Left(#response(__dl_error))),
                quote!(#either::Right(__dl_output)),
                None,
            )
        }
        ReturnType::Type(_, ty) => (
            quote!(return <#ty as #private::FromLockError>::from_lock_error(__dl_error)),
            quote!(__dl_output),
            Some(ty.to_token_stream()),
        ),
        ReturnType::Default => (
            quote!(return <() as #private::FromLockError>::from_lock_error(__dl_error)),
            quote!(__dl_output),
            Some(quote!(())),
        ),
    };
    // Pins the async block's return type to the function's, so `?` in the body infers its
    // error conversion exactly as it would in the function (tracing-attributes does the same).
    let fake_return = fake_return.map(|ty| {
        quote! {
            #[allow(unreachable_code, clippy::diverging_sub_expression, clippy::needless_return)]
            if false {
                let __dl_fake_return: #ty = loop {};
                return __dl_fake_return;
            }
        }
    });

    // One resource: a `Guard`; a list: a `MultiGuard` and the `_many` helpers.
    let (resource_value, acquire, many) = if let Resources::One(_) = resources {
        let (format, format_args) = (&templates[0].format, &templates[0].args);
        (
            quote!(::std::format!(#format #(, #format_args)*)),
            quote!(#private::acquire(#locker, &__dl_resource, &#options)),
            "",
        )
    } else {
        let each = templates.iter().map(|template| {
            let (format, format_args) = (&template.format, &template.args);
            quote!(::std::format!(#format #(, #format_args)*))
        });
        (
            quote!([#(#each),*]),
            quote!(#private::acquire_many(#locker, &__dl_resource, &#options)),
            "_many",
        )
    };
    let helper = |name: &str| {
        let ident = syn::Ident::new(&format!("{name}{many}"), proc_macro2::Span::call_site());
        quote!(#private::#ident)
    };
    let (hold_span, run_until_lost, release) = (
        helper("hold_span"),
        helper("run_until_lost"),
        helper("release"),
    );

    let block = &function.block;
    let instrumented = quote! {
        #private::Instrument::instrument(
            async move {
                #fake_return
                #block
            },
            #hold_span(&__dl_guard),
        )
    };
    // With `cancel_on_lost` the body races the guard's lost signal: a lost lock drops the body
    // (at its current await point) and leaves like a failed acquisition, with `LockError::Lost`.
    let run_body = if args.cancel_on_lost.unwrap_or(false) {
        quote! {
            let __dl_output = match #run_until_lost(&__dl_guard, #instrumented).await {
                ::core::result::Result::Ok(output) => output,
                ::core::result::Result::Err(__dl_error) => {
                    #release(__dl_guard).await;
                    #on_lock_error
                }
            };
        }
    } else {
        quote! {
            let __dl_output = #instrumented.await;
        }
    };
    let body = quote! {{
        let __dl_resource = #resource_value;
        let __dl_guard = match #acquire.await {
            ::core::result::Result::Ok(guard) => guard,
            ::core::result::Result::Err(__dl_error) => { #on_lock_error }
        };
        #bind_guard
        // The body runs in its own future, so `return` and `?` end the body, never skip the
        // release below; a panic or a dropped future releases through the guard's `Drop`.
        #run_body
        #release(__dl_guard).await;
        #output
    }};
    function.block = syn::parse2(body)?;
    Ok(function.into_token_stream())
}

/// The names a resource template may use: every variable the parameters bind, also inside
/// patterns (`Path(id): Path<i64>`, `State(state): State<App>`), and `self`.
fn parameter_names(function: &ItemFn) -> Vec<String> {
    struct Bindings(Vec<String>);
    impl<'ast> Visit<'ast> for Bindings {
        fn visit_pat_ident(&mut self, pat: &'ast syn::PatIdent) {
            self.0.push(pat.ident.to_string());
            syn::visit::visit_pat_ident(self, pat);
        }
    }
    let mut bindings = Bindings(Vec::new());
    for input in &function.sig.inputs {
        match input {
            FnArg::Receiver(_) => bindings.0.push("self".to_string()),
            FnArg::Typed(typed) => bindings.visit_pat(&typed.pat),
        }
    }
    bindings.0
}

/// Whether a return type mentions `impl Trait` (it cannot then be named in a `let`).
fn contains_impl_trait(ty: &Type) -> bool {
    struct FindImpl(bool);
    impl<'ast> Visit<'ast> for FindImpl {
        fn visit_type_impl_trait(&mut self, _: &'ast syn::TypeImplTrait) {
            self.0 = true;
        }
    }
    let mut finder = FindImpl(false);
    finder.visit_type(ty);
    finder.0
}
