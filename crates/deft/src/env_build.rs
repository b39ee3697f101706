//! `deft env build --repo PATH`: the environment a task on a local repository would get,
//! made alone, with the builder's output as it comes: for debugging a Dockerfile without
//! starting a task.

#![allow(
    clippy::print_stdout,
    reason = "the builder's output is the command's output"
)]

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, bail};

use crate::cli::{DataArgs, ModelArgs};
use crate::{config, local};

pub async fn run(repo: &str, data: &DataArgs, args: &ModelArgs) -> anyhow::Result<ExitCode> {
    let dir = local::data_dir(data.data_dir.as_deref())?;
    let config = config::load(args.config.as_deref(), &dir)?;
    // A path, or the id of a registered repository, whose setting then applies.
    let (path, environment) = if Path::new(repo).is_absolute() {
        (repo.to_owned(), deft_core::RepoEnvironment::Auto)
    } else {
        let (_, store) = local::open_store(data).await?;
        let registered = store.repository_by_id(repo).await.with_context(|| {
            format!("`{repo}` is neither an absolute path nor the id of a registered repository")
        })?;
        if registered.forge != deft_core::ForgeKind::Local {
            bail!(
                "{} is on GitHub; `deft env build` builds local repositories (give a clone's path)",
                registered.name
            );
        }
        (registered.location, registered.environment)
    };
    let local = deft_forge::inspect_local(&path).await?;
    // As a task does: from a copy of the repository's objects, never from its work tree.
    let scratch = tempfile::tempdir().context("cannot make a scratch directory")?;
    let private = scratch.path().join("repository.git");
    deft_forge::private::mirror_local(&local.path, &private).await?;
    let base = deft_agent::setup::RepoBase {
        name: local.name.clone(),
        private,
        commit: format!("refs/heads/{}", local.default_branch),
        environment,
        regular: None,
    };
    let wanted = deft_agent::setup::wanted(std::slice::from_ref(&base)).await?;
    let deft_agent::setup::Wanted::Dockerfile {
        path,
        context,
        tree,
        ..
    } = wanted
    else {
        println!(
            "{} has no {} on {}: its tasks use the host's tools",
            local.name,
            deft_agent::setup::DOCKERFILES.join(" or "),
            local.default_branch
        );
        return Ok(ExitCode::SUCCESS);
    };
    let Some(deft_agent::setup::ImageBuilder(images)) = config::images(&config, &dir)? else {
        bail!(
            "{}/{path} needs an image builder, and none is configured; start one (`podman system service --time=0 unix:///run/deft-podman.sock`) and set `[environments] builder` or {}",
            local.name,
            crate::env_vars::DEFT_IMAGE_BUILDER
        );
    };
    println!(
        "building {}/{path} ({} of {}) with {}",
        local.name,
        local.default_branch,
        local.path.display(),
        images.describe().await?
    );
    let request = deft_images::BuildRequest {
        context_tar: context,
        dockerfile: path,
        contents_id: Some(tree),
        network: Default::default(),
    };
    let prepared = images
        .prepare(&request, &mut |line: &str| println!("  {line}"))
        .await?;
    println!(
        "{} image {}: root filesystem at {}",
        if prepared.built { "built" } else { "cached" },
        prepared.key,
        prepared.rootfs.display()
    );
    for (key, value) in &prepared.config.env {
        println!("  ENV {key}={value}");
    }
    Ok(ExitCode::SUCCESS)
}
