//! `contract`: the HTTP API as the README documents it, request by request, through the load
//! balancer: statuses, stable error codes, headers. Cheap (a few dozen requests), so it runs
//! wherever the service runs: the native cluster and the Docker stack alike.

use super::common::Outcome;
use crate::env::Env;
use crate::verdict::Check;
use serde_json::Value;

/// One request and what must come back.
struct Case {
    what: &'static str,
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: String,
    status: u16,
    /// The JSON `error` code of a refusal.
    code: Option<&'static str>,
    /// A header the answer must carry.
    header: Option<&'static str>,
}

fn case(what: &'static str, method: &'static str, path: String, body: impl Into<String>) -> Case {
    Case {
        what,
        method,
        path,
        headers: vec![("content-type", "application/json".into())],
        body: body.into(),
        status: 200,
        code: None,
        header: None,
    }
}

impl Case {
    fn expect(mut self, status: u16, code: Option<&'static str>) -> Case {
        self.status = status;
        self.code = code;
        self
    }

    fn with_header(mut self, name: &'static str, value: &str) -> Case {
        self.headers.retain(|(existing, _)| *existing != name);
        self.headers.push((name, value.to_string()));
        self
    }

    fn carrying(mut self, header: &'static str) -> Case {
        self.header = Some(header);
        self
    }
}

/// Every case in turn; a case that answers otherwise fails its check, not the run.
pub async fn run(env: &Env) -> Result<Outcome, String> {
    let product = env.reset(10).await?;
    let key = format!("contract-{}", std::process::id());
    let deduct = format!("/product/{product}/deduct");
    // Two users of this run's own (ids from the pid), for a transfer that succeeds.
    let (payer, payee) = (
        800_000_000 + 2 * i64::from(std::process::id()),
        800_000_001 + 2 * i64::from(std::process::id()),
    );
    let transfer_body: &'static str =
        Box::leak(format!(r#"{{"from":{payer},"to":{payee},"amount":3}}"#).into_boxed_str());
    let cases = vec![
        case("liveness", "GET", "/health/live".into(), "")
            .carrying("x-instance")
            .carrying("x-request-id"),
        case("readiness", "GET", "/health/ready".into(), ""),
        case("health", "GET", "/health".into(), ""),
        case("read a product", "GET", format!("/product/{product}"), ""),
        case("deduct", "POST", deduct.clone(), r#"{"quantity":2}"#),
        case("deduct, empty body", "POST", deduct.clone(), ""),
        case(
            "deduct with a key",
            "POST",
            deduct.clone(),
            r#"{"quantity":1}"#,
        )
        .with_header("idempotency-key", &key),
        case(
            "the same request again",
            "POST",
            deduct.clone(),
            r#"{"quantity":1}"#,
        )
        .with_header("idempotency-key", &key)
        .carrying("idempotent-replayed"),
        case(
            "the key with another body",
            "POST",
            deduct.clone(),
            r#"{"quantity":3}"#,
        )
        .with_header("idempotency-key", &key)
        .expect(422, Some("idempotency_key_reused")),
        case(
            "more than the stock",
            "POST",
            deduct.clone(),
            r#"{"quantity":100}"#,
        )
        .expect(409, Some("out_of_stock")),
        case("an unknown product", "GET", "/product/987654321".into(), "")
            .expect(404, Some("product_not_found")),
        case("a bad id", "POST", "/product/abc/deduct".into(), "")
            .expect(400, Some("invalid_path")),
        case("a bad strategy", "POST", format!("{deduct}?strategy=x"), "")
            .expect(400, Some("invalid_query")),
        case(
            "duplicate keys",
            "POST",
            deduct.clone(),
            r#"{"quantity":1,"quantity":2}"#,
        )
        .expect(400, Some("invalid_json")),
        case("not JSON", "POST", deduct.clone(), "quantity=1")
            .with_header("content-type", "text/plain")
            .expect(415, Some("unsupported_media_type")),
        case(
            "a NUL in a name",
            "POST",
            "/product".into(),
            r#"{"name":"a\u0000b","stock":1}"#,
        )
        .expect(400, Some("invalid_name")),
        case(
            "an unknown user",
            "POST",
            "/balance/987654321/use".into(),
            r#"{"amount":1}"#,
        )
        .expect(404, Some("user_not_found")),
        case(
            "charge a user",
            "POST",
            format!("/balance/{payer}/charge"),
            r#"{"amount":10}"#,
        ),
        case(
            "charge another",
            "POST",
            format!("/balance/{payee}/charge"),
            r#"{"amount":1}"#,
        ),
        case(
            "a transfer",
            "POST",
            "/balance/transfer".into(),
            transfer_body,
        ),
        case(
            "a transfer to oneself",
            "POST",
            "/balance/transfer".into(),
            r#"{"from":987654321,"to":987654321,"amount":1}"#,
        )
        .expect(422, Some("same_user")),
        case(
            "a transfer from an unknown user",
            "POST",
            "/balance/transfer".into(),
            r#"{"from":987654321,"to":987654322,"amount":1}"#,
        )
        .expect(404, Some("user_not_found")),
        case("an unknown route", "GET", "/nowhere".into(), "").expect(404, Some("not_found")),
    ];
    let mut checks = Vec::new();
    for case in &cases {
        let detail = send(env, case).await;
        checks.push(Check::new(
            "contract",
            case.what,
            detail.is_ok(),
            detail.unwrap_or_else(|err| err),
        ));
    }
    let (stock, _) = env.get(&format!("/product/{product}")).await?;
    let sold = env.sql_i64(&format!(
        "SELECT COALESCE(SUM(quantity), 0) FROM stock_ledger WHERE product_id = {product}"
    ))?;
    checks.push(Check::new(
        "contract",
        "stock = initial − Σ ledger, refusals wrote nothing",
        stock["stock"].as_i64() == Some(10 - sold) && sold == 4,
        format!("ledger {sold} (expected 4), stock {}", stock["stock"]),
    ));
    Ok(Outcome {
        checks,
        loads: Vec::new(),
        markdown: format!("{} requests through the load balancer.\n", cases.len()),
        charts: Vec::new(),
    })
}

/// Sends one case; `Ok(what came back)` when it matches.
async fn send(env: &Env, case: &Case) -> Result<String, String> {
    let url = format!("{}{}", env.lb_url, case.path);
    let mut request = match case.method {
        "GET" => env.client.get(&url),
        _ => env.client.post(&url).body(case.body.clone()),
    };
    for (name, value) in &case.headers {
        if case.method == "POST" || *name != "content-type" {
            request = request.header(*name, value);
        }
    }
    let response = request.send().await.map_err(|err| err.to_string())?;
    let status = response.status().as_u16();
    let missing_header = case
        .header
        .filter(|header| !response.headers().contains_key(*header));
    let text = response.text().await.map_err(|err| err.to_string())?;
    let body: Value = serde_json::from_str(&text).map_err(|_| {
        format!(
            "{status}, not JSON: {}",
            text.chars().take(80).collect::<String>()
        )
    })?;
    let code = body["error"].as_str();
    let seen = format!("{status} {}", code.unwrap_or(""));
    if status != case.status || code != case.code {
        return Err(format!(
            "expected {} {}, got {seen}",
            case.status,
            case.code.unwrap_or("")
        ));
    }
    if let Some(header) = missing_header {
        return Err(format!("{seen}: no {header} header"));
    }
    if status == 503 && !text.is_empty() && code.is_none() {
        return Err(format!("{seen}: no error code"));
    }
    Ok(seen)
}
