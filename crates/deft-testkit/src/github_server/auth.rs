//! App authentication as GitHub does it: the App's JWT (RS256, checked with its public key),
//! installation tokens minted for it, and the installation endpoints.

use super::*;

#[derive(serde::Deserialize)]
pub(super) struct AppClaims {
    iss: Value,
}

/// The App's JWT, checked as GitHub checks it: RS256, signed by the App's key, not expired,
/// issued by the App.
pub(super) fn app_authorized(hub: &Hub, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            error(
                StatusCode::UNAUTHORIZED,
                "A JSON web token could not be decoded",
            )
        })?;
    let key = DecodingKey::from_rsa_pem(&hub.public_key_pem)
        .map_err(|_| Box::new(error(StatusCode::INTERNAL_SERVER_ERROR, "bad test key")))?;
    let mut validation = Validation::new(Algorithm::RS256);
    // GitHub Apps send `iss` as a number, which the library's own issuer check cannot read;
    // it is checked below.
    validation.set_required_spec_claims(&["exp", "iat"]);
    let claims = decode::<AppClaims>(token, &key, &validation)
        .map_err(|e| {
            error(
                StatusCode::UNAUTHORIZED,
                &format!("A JSON web token could not be decoded: {e}"),
            )
        })?
        .claims;
    let issuer = match &claims.iss {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    if issuer != Some(hub.app_id) {
        return Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "'Issuer' claim ('iss') must be an Integer",
        )));
    }
    Ok(())
}

/// An installation token (or nothing): what the API and git calls must carry.
pub(super) fn installation_authorized(hub: &Hub, headers: &HeaderMap) -> bool {
    let value = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let token = if let Some(token) = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("token "))
    {
        token.to_owned()
    } else if let Some(basic) = value.strip_prefix("Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .unwrap_or_default();
        match decoded.split_once(':') {
            Some(("x-access-token", token)) => token.to_owned(),
            _ => return false,
        }
    } else {
        return false;
    };
    hub.tokens
        .get(&token)
        .is_some_and(|expires| *expires > now_secs())
}

pub(super) async fn access_token(
    State(hub): State<Shared>,
    UrlPath(id): UrlPath<u64>,
    headers: HeaderMap,
) -> Response {
    let mut hub = hub.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(response) = app_authorized(&hub, &headers) {
        return *response;
    }
    if id != hub.installation_id {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    let token = format!("ghs_{}", uuid::Uuid::new_v4().simple());
    let expires = now_secs() + 3600;
    hub.tokens.insert(token.clone(), expires);
    hub.token_requests += 1;
    (
        StatusCode::CREATED,
        axum::Json(json!({
            "token": token,
            "expires_at": rfc3339(expires),
            "permissions": {"contents": "write", "issues": "write", "pull_requests": "write", "checks": "read", "metadata": "read"},
            "repository_selection": "selected"
        })),
    )
        .into_response()
}

pub(super) async fn installations(State(hub): State<Shared>, headers: HeaderMap) -> Response {
    let hub = hub.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(response) = app_authorized(&hub, &headers) {
        return *response;
    }
    let mut body = fixture("installation", "created.payload.json")["installation"].clone();
    body["id"] = json!(hub.installation_id);
    body["app_id"] = json!(hub.app_id);
    axum::Json(json!([body])).into_response()
}

pub(super) async fn installation_repositories(
    State(hub): State<Shared>,
    headers: HeaderMap,
) -> Response {
    let hub = hub.lock().unwrap_or_else(|e| e.into_inner());
    if !installation_authorized(&hub, &headers) {
        return error(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    let base = base_of(&headers);
    let mut names: Vec<&String> = hub
        .repos
        .iter()
        .filter(|(_, r)| r.installed)
        .map(|(n, _)| n)
        .collect();
    names.sort();
    let repositories: Vec<Value> = names
        .into_iter()
        .map(|name| repo_json(&base, name, &hub.repos[name]))
        .collect();
    axum::Json(json!({"total_count": repositories.len(), "repository_selection": "selected", "repositories": repositories}))
        .into_response()
}
