//! `POST /graphql` for the one query deft makes there: a pull request's `reviewThreads`,
//! answered in the shape of `fixtures/github-rest/graphql/review-threads.json`.

use super::*;

/// A review thread to serve: whether it is resolved, its file, and its comments as
/// `(databaseId, author, body)`, oldest first.
#[derive(Debug, Clone)]
pub struct ThreadSpec<'a> {
    pub resolved: bool,
    pub path: &'a str,
    pub comments: &'a [(u64, &'a str, &'a str)],
}

pub(super) fn thread_json(index: usize, spec: &ThreadSpec<'_>) -> Value {
    let example = rest_fixture("graphql/review-threads.json");
    let mut thread =
        example["data"]["repository"]["pullRequest"]["reviewThreads"]["nodes"][0].clone();
    let comment = thread["comments"]["nodes"][0].clone();
    thread["id"] = json!(format!("PRRT_stand_in_{index}"));
    thread["isResolved"] = json!(spec.resolved);
    thread["path"] = json!(spec.path);
    thread["comments"]["nodes"] = spec
        .comments
        .iter()
        .map(|(id, login, body)| {
            let mut node = comment.clone();
            node["id"] = json!(format!("PRRC_stand_in_{id}"));
            node["databaseId"] = json!(id);
            node["author"]["login"] = json!(login);
            node["body"] = json!(body);
            node["path"] = json!(spec.path);
            node
        })
        .collect();
    thread
}

pub(super) async fn graphql(
    State(hub): State<Shared>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let hub = hub.lock().unwrap_or_else(|e| e.into_inner());
    let query = body["query"].as_str().unwrap_or_default();
    let variables = &body["variables"];
    if !query.contains("reviewThreads") {
        return axum::Json(
            json!({"errors": [{"message": "the stand-in answers only reviewThreads"}]}),
        )
        .into_response();
    }
    let owner = variables["owner"].as_str().unwrap_or_default();
    let name = variables["name"].as_str().unwrap_or_default();
    let (full, _) = match guarded(&hub, &headers, owner, name) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let number = variables["number"].as_u64().unwrap_or_default();
    let mut answer = rest_fixture("graphql/review-threads.json");
    let threads = &mut answer["data"]["repository"]["pullRequest"]["reviewThreads"];
    threads["nodes"] = json!(
        hub.threads
            .get(&(full, number))
            .cloned()
            .unwrap_or_default()
    );
    threads["pageInfo"]["hasNextPage"] = json!(false);
    axum::Json(answer).into_response()
}
