//! What a backend is ([`Backend`]), and the view of a store's data its calls get
//! ([`View`], linked through [`Data`]).

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use wasmtime::component::{HasData, Linker, ResourceTable};

use super::{Backends, GrantId, Settings};
use crate::error::HostError;
use crate::manifest::Limits;
use crate::state::{HostState, PluginEnv};

/// One service a plugin can be granted: its grant, connection, per-plugin client and WIT
/// imports. Implemented by a marker type in the backend's module and listed once in the
/// registry (`backends/mod.rs`).
pub trait Backend: Sized + Send + Sync + 'static {
    /// The backend's `[plugin.grants]` entry: the scope a plugin is given.
    type Grant: DeserializeOwned + Clone + PartialEq + fmt::Debug + Send + Sync;
    /// The connection every plugin granted this backend shares, made once per host.
    type Shared: fmt::Debug + Send + Sync + 'static;
    /// The connection bound to one plugin's grant: what a call uses.
    type Client: fmt::Debug + Send + Sync + 'static;

    /// The service, for people: `"Kafka"`, `"PostgreSQL"`.
    const SERVICE: &'static str;
    /// The WIT interfaces this backend serves, without version: importing any of them
    /// needs this backend's grant.
    const IMPORTS: &'static [&'static str];
    /// A `[plugin.grants]` line granting this backend, with placeholders for its scope.
    const GRANT_LINE: &'static str;

    /// What is wrong with `grant` beyond what serde checks (names, empty scopes), each
    /// problem with its key under the grant (e.g. `publish[0]`).
    fn check_grant(grant: &Self::Grant) -> Vec<GrantProblem>;

    /// Connects to the service named by `settings`.
    fn connect(settings: &Settings) -> impl Future<Output = anyhow::Result<Self::Shared>> + Send;

    /// Whether the service answers now (the admin API's readiness).
    fn ping(shared: &Self::Shared) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Binds `plugin`'s `grant` to the shared connection; `limits` are the plugin's
    /// `[plugin.limits]`, for backends that set them on their sessions.
    fn bind(
        shared: &Self::Shared,
        plugin: &str,
        grant: &Self::Grant,
        limits: &Limits,
    ) -> anyhow::Result<Self::Client>;

    /// Waits until the background work `client`'s plugin started has finished (an index
    /// `prepare-index` is creating): the host waits for it after a plugin's `setup`, so that
    /// what setup prepared is there before the first event. Most backends start none.
    fn settle(client: &Self::Client) -> impl Future<Output = ()> + Send {
        let _ = client;
        std::future::ready(())
    }

    /// Adds the backend's interfaces to `linker`, their `Host` traits implemented for
    /// [`View<'_, Self>`](View) and linked through [`Data<Self>`](Data).
    fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()>;
}

/// One problem in a grant, found by [`Backend::check_grant`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantProblem {
    /// The key under the grant, e.g. `publish[0]`, `role`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl GrantProblem {
    /// A problem with `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        GrantProblem {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// What the registry adds to a [`Backend`]: its identifier and where its per-plugin client
/// lives. Implemented by the `registry!` macro, never by hand.
pub trait Registered: Backend {
    /// The backend's grant identifier.
    const ID: GrantId;
    /// The plugin's client of this backend, if granted.
    fn client(backends: &Backends) -> Option<&Self::Client>;
}

/// What a call of backend `B` may reach in a store: the plugin's environment (its client
/// of `B`, its name and limits) and the store's resource table. The generated `Host`
/// traits of `B`'s interfaces are implemented for this view, not for the whole
/// [`HostState`].
pub struct View<'a, B> {
    /// The plugin's environment: name, limits, bound backends.
    pub env: &'a PluginEnv,
    /// Resources the guest holds handles to (transactions, buckets).
    pub table: &'a mut ResourceTable,
    backend: PhantomData<B>,
}

/// The view of backend `B` over a store's `state`: the getter every backend's
/// `add_to_linker` passes (`view::<Self>`).
pub fn view<B: Registered>(state: &mut HostState) -> View<'_, B> {
    View {
        env: &state.env,
        table: &mut state.table,
        backend: PhantomData,
    }
}

impl<'a, B: Registered> View<'a, B> {
    /// The plugin's client of `B`. A plugin without the grant was refused at load when it
    /// imported the interface, so the error is a host bug made visible, not a trap.
    pub fn client(&self) -> Result<&'a B::Client, HostError> {
        B::client(&self.env.backends).ok_or_else(|| {
            HostError::denied(format!("this plugin has no `{}` grant", B::ID.name()))
        })
    }

    /// The plugin's client of `B` and its environment: what nearly every call starts with.
    pub fn granted(&self) -> Result<(&'a B::Client, &'a PluginEnv), HostError> {
        Ok((self.client()?, self.env))
    }
}

/// The [`HasData`] marker linking backend `B`'s interfaces to [`View<'_, B>`](View).
pub struct Data<B>(PhantomData<B>);

impl<B: Registered> HasData for Data<B> {
    type Data<'a> = View<'a, B>;
}

/// Every backend's calls convert their errors the one way ([`HostError::into_wit`]).
impl<B: Registered> crate::bindings::polyhost::platform::types::Host for View<'_, B> {
    fn convert_error(
        &mut self,
        err: HostError,
    ) -> wasmtime::Result<crate::bindings::polyhost::platform::types::Error> {
        err.into_wit()
    }
}

/// The [`HasData`] marker of the plugin's own, backend-free interfaces (`wasi:logging`,
/// `wasi:config`): they see only the plugin's environment.
pub struct EnvData;

impl HasData for EnvData {
    type Data<'a> = &'a PluginEnv;
}
