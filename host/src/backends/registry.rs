//! The `registry!` macro: from one line per backend, the typed [`GrantId`](super::GrantId),
//! the manifest's [`Grants`](super::Grants), the host's [`Connections`](super::Connections)
//! and a plugin's [`Backends`](super::Backends).

/// `registry! { /// doc \n field: Variant => path::Marker, … }`: `field` is the grant's key
/// in `[plugin.grants]`, `Variant` its [`GrantId`](super::GrantId), `Marker` the type
/// implementing [`Backend`](super::Backend).
macro_rules! registry {
    ($( $(#[$doc:meta])* $field:ident : $variant:ident => $ty:ty ),* $(,)?) => {
        /// A backend's grant: one per registered backend, shown as its `[plugin.grants]` key.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum GrantId {
            $( $(#[$doc])* $variant, )*
        }

        impl GrantId {
            /// Every backend, in registry order.
            pub const ALL: &'static [GrantId] = &[$(GrantId::$variant),*];

            /// The grant's key in `[plugin.grants]`, e.g. `keyvalue`.
            pub fn name(self) -> &'static str {
                match self {
                    $( GrantId::$variant => stringify!($field), )*
                }
            }

            /// The grant whose key is `name`.
            pub fn from_name(name: &str) -> Option<GrantId> {
                GrantId::ALL.iter().copied().find(|id| id.name() == name)
            }

            /// A `[plugin.grants]` line granting it, with placeholders for its scope.
            pub fn grant_line(self) -> &'static str {
                match self {
                    $( GrantId::$variant => <$ty as Backend>::GRANT_LINE, )*
                }
            }

            /// The WIT interfaces (without version) that need this grant.
            pub fn imports(self) -> &'static [&'static str] {
                match self {
                    $( GrantId::$variant => <$ty as Backend>::IMPORTS, )*
                }
            }

            /// The service behind it, for people.
            pub fn service(self) -> &'static str {
                match self {
                    $( GrantId::$variant => <$ty as Backend>::SERVICE, )*
                }
            }

            /// The grant that `interface` (without version) needs, if a backend serves it.
            pub fn serving(interface: &str) -> Option<GrantId> {
                GrantId::ALL
                    .iter()
                    .copied()
                    .find(|id| id.imports().contains(&interface))
            }
        }

        impl std::fmt::Display for GrantId {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        /// A plugin's `[plugin.grants]`: deny by default, each backend only if named here.
        #[derive(Debug, Clone, Default, Deserialize, PartialEq)]
        #[serde(deny_unknown_fields)]
        pub struct Grants {
            $( $(#[$doc])* pub $field: Option<<$ty as Backend>::Grant>, )*
        }

        impl Grants {
            /// Whether the grant `id` is present.
            pub fn has(&self, id: GrantId) -> bool {
                match id {
                    $( GrantId::$variant => self.$field.is_some(), )*
                }
            }

            /// Every problem of the present grants, each with its full key
            /// (`grants.<backend>.<key>`).
            pub fn problems(&self) -> Vec<GrantProblem> {
                let mut out = Vec::new();
                $(
                    if let Some(grant) = &self.$field {
                        out.extend(<$ty as Backend>::check_grant(grant).into_iter().map(|p| {
                            GrantProblem {
                                key: format!(concat!("grants.", stringify!($field), ".{}"), p.key),
                                message: p.message,
                            }
                        }));
                    }
                )*
                out
            }
        }

        /// The connections shared by every plugin of a host: each made once, on first need.
        #[derive(Debug, Default)]
        pub struct Connections {
            /// Where the services are.
            pub settings: Settings,
            $( $field: tokio::sync::OnceCell<<$ty as Backend>::Shared>, )*
        }

        impl Connections {
            /// Connections to the services named by `settings`; nothing is dialled yet.
            pub fn new(settings: Settings) -> Self {
                Connections {
                    settings,
                    ..Default::default()
                }
            }

            /// Pings every backend a plugin has been bound to (the others are not needed):
            /// one `(backend, Err(reason))` per backend that does not answer within 2 s.
            pub async fn readiness(&self) -> Vec<(&'static str, Result<(), String>)> {
                let mut out = Vec::new();
                $(
                    if let Some(shared) = self.$field.get() {
                        out.push((
                            stringify!($field),
                            registry::unit_probe(<$ty as Backend>::ping(shared)).await,
                        ));
                    }
                )*
                out
            }
        }

        /// One plugin's backends, each bound to its grant. `None`: not granted.
        #[derive(Debug, Default)]
        pub struct Backends {
            $( $field: Option<<$ty as Backend>::Client>, )*
        }

        impl Backends {
            /// Binds the granted backends for `plugin`, connecting the shared clients on
            /// first need.
            pub async fn bind(
                conns: &Connections,
                plugin: &str,
                grants: &Grants,
                limits: &crate::manifest::Limits,
            ) -> anyhow::Result<Backends> {
                use anyhow::Context as _;
                let mut b = Backends::default();
                $(
                    if let Some(grant) = &grants.$field {
                        let shared = conns
                            .$field
                            .get_or_try_init(|| <$ty as Backend>::connect(&conns.settings))
                            .await
                            .with_context(|| {
                                format!("connecting to {}", <$ty as Backend>::SERVICE)
                            })?;
                        b.$field = Some(<$ty as Backend>::bind(shared, plugin, grant, limits)?);
                    }
                )*
                Ok(b)
            }

            /// Waits until the background work the plugin started in any of its backends
            /// has finished ([`Backend::settle`]).
            pub async fn settle(&self) {
                $(
                    if let Some(client) = &self.$field {
                        <$ty as Backend>::settle(client).await;
                    }
                )*
            }
        }

        $(
            impl Registered for $ty {
                const ID: GrantId = GrantId::$variant;
                fn client(backends: &Backends) -> Option<&Self::Client> {
                    backends.$field.as_ref()
                }
            }
        )*

        /// Every registered backend's interfaces.
        fn add_backends_to_linker(
            linker: &mut wasmtime::component::Linker<crate::state::HostState>,
        ) -> wasmtime::Result<()> {
            $( <$ty as Backend>::add_to_linker(linker)?; )*
            Ok(())
        }
    };
}

/// A readiness probe's answer: `Err(reason)` when `ping` fails or takes over 2 s.
pub(super) async fn unit_probe(
    ping: impl std::future::Future<Output = anyhow::Result<()>>,
) -> Result<(), String> {
    match tokio::time::timeout(std::time::Duration::from_secs(2), ping).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(_) => Err("no answer within 2 s".to_string()),
    }
}
