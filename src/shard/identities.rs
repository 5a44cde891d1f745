//! The identities of a shard's keys under `ContextPerKey`: the [`ContextOptions`] set
//! for each key or given by the pool's provider, the cookies imported for a key, and the
//! IO steps that carry them into the browser (a context created with its proxy and
//! seeded with its cookies, a page given its user agent, headers, locale and time zone,
//! cookies read from or written to a key's contexts).
//!
//! Each shard keeps its own copy (the pool sends every change to every shard), so a key
//! served by any shard, stolen or not, finds the same identity, and nothing is shared
//! between shard threads but the provider, which is `Send + Sync` and called on the
//! shard. Never decides who gets a page; never touches the plan.

use std::cell::RefCell;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::Arc as StdArc;

use crate::cdp::{Connection, Page};
use crate::error::{Error, ErrorKind, Result};
use crate::identity::{ContextOptions, Cookie};
use crate::sync::oneshot;

/// The pool's per-key options provider
/// ([`PoolBuilder::context_options`](crate::PoolBuilder::context_options)).
#[derive(Clone)]
pub(crate) struct Provider(pub(crate) StdArc<dyn Fn(&str) -> ContextOptions + Send + Sync>);

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Provider(..)")
    }
}

/// A key's identity, as one opening uses it.
#[derive(Clone)]
pub(crate) struct Identity {
    pub(crate) key: StdArc<str>,
    pub(crate) options: Rc<ContextOptions>,
    /// Cookies imported for the key, put into each of its contexts as it is created.
    pub(crate) seeds: Option<Rc<[Cookie]>>,
}

/// What the pool asks of a shard about its keys' identities.
pub(crate) enum IdentityOp {
    /// Use `options` for `key` from now on.
    SetOptions {
        key: StdArc<str>,
        options: ContextOptions,
        done: oneshot::Sender<()>,
    },
    /// The cookies of `key`'s contexts on this shard (`None`: it has none here).
    ExportCookies {
        key: StdArc<str>,
        reply: oneshot::Sender<Result<Option<Vec<Cookie>>>>,
    },
    /// The cookies imported for `key` (empty if none).
    Seeds {
        key: StdArc<str>,
        reply: oneshot::Sender<Vec<Cookie>>,
    },
    /// Puts `cookies` into `key`'s contexts on this shard and into those created later.
    ImportCookies {
        key: StdArc<str>,
        cookies: StdArc<[Cookie]>,
        reply: oneshot::Sender<Result<()>>,
    },
}

impl IdentityOp {
    /// Answers the pool with `error` instead.
    pub(crate) fn fail(self, error: Error) {
        match self {
            // The pool hears the shard is gone from its closed channel.
            IdentityOp::SetOptions { .. } | IdentityOp::Seeds { .. } => {}
            IdentityOp::ExportCookies { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            IdentityOp::ImportCookies { reply, .. } => {
                let _ = reply.send(Err(error));
            }
        }
    }
}

/// A shard's identities of keys.
pub(crate) struct Identities {
    provider: Option<Provider>,
    set: RefCell<HashMap<StdArc<str>, Rc<ContextOptions>>>,
    seeds: RefCell<HashMap<StdArc<str>, Rc<[Cookie]>>>,
}

impl Identities {
    pub(crate) fn new(provider: Option<Provider>) -> Self {
        Identities {
            provider,
            set: RefCell::default(),
            seeds: RefCell::default(),
        }
    }

    /// Uses `options` for `key` from now on (the provider is not asked about it again).
    pub(crate) fn set(&self, key: StdArc<str>, options: ContextOptions) {
        self.set.borrow_mut().insert(key, Rc::new(options));
    }

    /// Seeds every context of `key` created from now on with `cookies`.
    pub(crate) fn seed(&self, key: StdArc<str>, cookies: &[Cookie]) {
        self.seeds.borrow_mut().insert(key, cookies.into());
    }

    /// The cookies imported for `key`, if any.
    pub(crate) fn seeds(&self, key: &StdArc<str>) -> Option<Rc<[Cookie]>> {
        self.seeds.borrow().get(key).cloned()
    }

    /// `key`'s identity: the options set for it, else the provider's, else the
    /// defaults. A provider that panics or gives invalid options fails the opening
    /// (with [`ErrorKind::InvalidInput`]), not the shard.
    pub(crate) fn of(&self, key: &StdArc<str>) -> Result<Identity> {
        let set = self.set.borrow().get(key).cloned();
        let options = match (set, &self.provider) {
            (Some(options), _) => options,
            (None, Some(provider)) => {
                let given = std::panic::catch_unwind(AssertUnwindSafe(|| (provider.0)(key)))
                    .map_err(|_| {
                        Error::new(
                            ErrorKind::InvalidInput,
                            format!("the context options provider panicked for key {key:?}"),
                        )
                    })?;
                given.validate().map_err(|e| {
                    Error::new(
                        ErrorKind::InvalidInput,
                        format!(
                            "the context options provider, for key {key:?}: {}",
                            e.message()
                        ),
                    )
                })?;
                Rc::new(given)
            }
            (None, None) => Rc::new(ContextOptions::default()),
        };
        Ok(Identity {
            key: key.clone(),
            options,
            seeds: self.seeds(key),
        })
    }
}

impl super::Shell {
    /// Sets a key's options, or reads or writes its cookies in every context it has on
    /// this shard (cookies imported also seed the contexts created later).
    pub(super) fn identity_op(self: &Rc<Self>, op: IdentityOp) {
        match op {
            IdentityOp::SetOptions { key, options, done } => {
                self.identities.set(key, options);
                let _ = done.send(());
            }
            IdentityOp::Seeds { key, reply } => {
                let seeds = self.identities.seeds(&key);
                let _ = reply.send(seeds.map(|s| s.to_vec()).unwrap_or_default());
            }
            IdentityOp::ExportCookies { key, reply } => {
                let shell = self.clone();
                tokio::task::spawn_local(async move {
                    let contexts = shell.contexts.of(&key);
                    if contexts.is_empty() {
                        let _ = reply.send(Ok(None));
                        return;
                    }
                    let mut parts = Vec::new();
                    for (browser, ctx) in contexts {
                        let Some(conn) = shell.links.live(browser) else {
                            continue;
                        };
                        match get_cookies(&conn, &ctx).await {
                            Ok(cookies) => parts.push(cookies),
                            Err(e) => {
                                let _ = reply.send(Err(e));
                                return;
                            }
                        }
                    }
                    let _ = reply.send(Ok(Some(crate::identity::merge_cookies(parts))));
                });
            }
            IdentityOp::ImportCookies {
                key,
                cookies,
                reply,
            } => {
                self.identities.seed(key.clone(), &cookies);
                let shell = self.clone();
                tokio::task::spawn_local(async move {
                    for (browser, ctx) in shell.contexts.of(&key) {
                        let Some(conn) = shell.links.live(browser) else {
                            continue;
                        };
                        if let Err(e) = set_cookies(&conn, &ctx, &cookies).await {
                            let _ = reply.send(Err(e));
                            return;
                        }
                    }
                    let _ = reply.send(Ok(()));
                });
            }
        }
    }
}

/// A new browser context with `identity`'s proxy, seeded with its cookies.
pub(crate) async fn create_context(
    conn: &Connection,
    identity: Option<&Identity>,
) -> Result<String> {
    let params = identity.map_or_else(
        || serde_json::json!({}),
        |i| i.options.create_context_params(),
    );
    let reply = conn
        .call("Target.createBrowserContext", params)
        .await
        .map_err(|e| refused(identity, e))?;
    let id = reply["browserContextId"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Protocol,
                "Target.createBrowserContext returned no id",
            )
        })?;
    if let Some(seeds) = identity.and_then(|i| i.seeds.as_ref()) {
        if let Err(e) = set_cookies(conn, &id, seeds).await {
            dispose_context(conn, &id);
            return Err(refused(identity, e));
        }
    }
    Ok(id)
}

/// Gives a page just opened in `identity`'s context that identity: proxy credentials,
/// then its overrides, pipelined.
pub(crate) async fn identify(page: &Page, identity: &Identity) -> Result<()> {
    let options = &identity.options;
    let commands = options.page_commands();
    let calls = commands
        .into_iter()
        .map(|(method, params)| page.call(method, params));
    let overrides = futures_util::future::try_join_all(calls);
    let result = match options.credentials() {
        Some(c) => futures_util::future::try_join(page.answer_proxy_auth(c.clone()), overrides)
            .await
            .map(|_| ()),
        None => overrides.await.map(|_| ()),
    };
    result.map_err(|e| refused(Some(identity), e))
}

/// A browser's refusal of a key's options, as an input error (it is no fault of the
/// browser's, so it must not count against it) naming the key.
fn refused(identity: Option<&Identity>, e: Error) -> Error {
    match identity {
        Some(i) if e.kind() == ErrorKind::Protocol || e.kind() == ErrorKind::InvalidInput => {
            Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "the context options of key {:?} were refused: {}",
                    i.key,
                    e.message()
                ),
            )
        }
        _ => e,
    }
}

/// The cookies of browser context `context`.
pub(crate) async fn get_cookies(conn: &Connection, context: &str) -> Result<Vec<Cookie>> {
    let reply = conn
        .call(
            "Storage.getCookies",
            serde_json::json!({ "browserContextId": context }),
        )
        .await?;
    Cookie::from_reply(&reply)
}

/// Puts `cookies` into browser context `context`.
pub(crate) async fn set_cookies(
    conn: &Connection,
    context: &str,
    cookies: &[Cookie],
) -> Result<()> {
    if cookies.is_empty() {
        return Ok(());
    }
    conn.call("Storage.setCookies", Cookie::set_params(cookies, context))
        .await
        .map(|_| ())
}

/// Disposes a browser context, not waiting for the reply.
pub(crate) fn dispose_context(conn: &Connection, id: &str) {
    conn.send_and_forget(
        "Target.disposeBrowserContext",
        serde_json::json!({ "browserContextId": id }),
    );
}
