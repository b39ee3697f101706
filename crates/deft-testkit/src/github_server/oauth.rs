//! The App's user authorization (OAuth web flow with PKCE), as GitHub serves it on its web
//! host: `GET /login/oauth/authorize` (the person approves at once, as the login the test
//! set), `POST /login/oauth/access_token` (code, client secret, redirect and PKCE verifier
//! checked; a code works once), and `GET /user` for the user token it gave.

use sha2::Digest as _;

use super::*;

/// The App's OAuth client and the person who approves the next authorization.
#[derive(Debug, Clone, Default)]
pub(super) struct OAuthState {
    pub(super) client_id: String,
    pub(super) client_secret: String,
    /// Who approves; `None` denies (GitHub's `error=access_denied`).
    pub(super) approver: Option<String>,
    /// Codes given: code → (challenge, redirect_uri, login).
    pub(super) codes: HashMap<String, (String, String, String)>,
    /// User tokens given: token → login.
    pub(super) tokens: HashMap<String, String>,
    /// What the token endpoint was asked, in order: `ok` or the error it answered.
    pub(super) exchanges: Vec<String>,
}

#[derive(serde::Deserialize)]
pub(super) struct Authorize {
    client_id: String,
    redirect_uri: Option<String>,
    state: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

fn with_query(url: &str, pairs: &[(&str, &str)]) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    format!("{url}{}{query}", if url.contains('?') { '&' } else { '?' })
}

pub(super) async fn authorize(
    State(hub): State<Shared>,
    Query(asked): Query<Authorize>,
) -> Response {
    let mut hub = hub.lock().unwrap_or_else(|e| e.into_inner());
    let oauth = &mut hub.oauth;
    let (Some(redirect), Some(challenge)) = (asked.redirect_uri, asked.code_challenge) else {
        return error(
            StatusCode::BAD_REQUEST,
            "redirect_uri and code_challenge are needed",
        );
    };
    if asked.client_id != oauth.client_id || asked.code_challenge_method.as_deref() != Some("S256")
    {
        return error(
            StatusCode::NOT_FOUND,
            "The client_id or challenge method is wrong",
        );
    }
    let state = asked.state.unwrap_or_default();
    let target = match oauth.approver.clone() {
        Some(login) => {
            let code = uuid::Uuid::new_v4().simple().to_string()[..20].to_owned();
            oauth
                .codes
                .insert(code.clone(), (challenge, redirect.clone(), login));
            with_query(&redirect, &[("code", &code), ("state", &state)])
        }
        None => with_query(
            &redirect,
            &[
                ("error", "access_denied"),
                (
                    "error_description",
                    "The user has denied your application access.",
                ),
                ("state", &state),
            ],
        ),
    };
    Response::builder()
        .status(StatusCode::FOUND)
        .header("location", target)
        .body(Body::empty())
        .unwrap_or_default()
}

pub(super) async fn access_token(State(hub): State<Shared>, body: Bytes) -> Response {
    let asked: HashMap<String, String> = serde_json::from_slice::<HashMap<String, String>>(&body)
        .unwrap_or_else(|_| form_urlencoded::parse(&body).into_owned().collect());
    let field = |name: &str| asked.get(name).map(String::as_str).unwrap_or_default();
    let mut hub = hub.lock().unwrap_or_else(|e| e.into_inner());
    let oauth = &mut hub.oauth;
    if field("client_id") != oauth.client_id || field("client_secret") != oauth.client_secret {
        oauth.exchanges.push("incorrect_client_credentials".into());
        return axum::Json(json!({"error": "incorrect_client_credentials"})).into_response();
    }
    // A code works once, with its own redirect and the verifier of its challenge.
    let verified = oauth
        .codes
        .remove(field("code"))
        .filter(|(challenge, redirect, _)| {
            let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(sha2::Sha256::digest(field("code_verifier").as_bytes()));
            *challenge == computed && redirect == field("redirect_uri")
        });
    let Some((_, _, login)) = verified else {
        oauth.exchanges.push("bad_verification_code".into());
        return axum::Json(rest_fixture("oauth/bad-verification-code.json")).into_response();
    };
    let mut answer = rest_fixture("oauth/access-token.json");
    let token = format!("ghu_{}", uuid::Uuid::new_v4().simple());
    answer["access_token"] = json!(token);
    oauth.tokens.insert(token, login);
    oauth.exchanges.push("ok".into());
    axum::Json(answer).into_response()
}

pub(super) async fn user(State(hub): State<Shared>, headers: HeaderMap) -> Response {
    let hub = hub.lock().unwrap_or_else(|e| e.into_inner());
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("token "))
        })
        .unwrap_or_default();
    let Some(login) = hub.oauth.tokens.get(token) else {
        return error(StatusCode::UNAUTHORIZED, "Bad credentials");
    };
    let mut user = rest_fixture("users/authenticated-user.json");
    user["login"] = json!(login);
    user["html_url"] = json!(format!("https://github.example/{login}"));
    axum::Json(user).into_response()
}
