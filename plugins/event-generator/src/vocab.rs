//! The words the generator draws from: names, countries, genres, reasons.

/// Given names for users and cast members.
pub const FIRST_NAMES: &[&str] = &[
    "Ana",
    "Bruno",
    "Carla",
    "Diego",
    "Elisa",
    "Felipe",
    "Gabriela",
    "Heitor",
    "Isabela",
    "João",
    "Larissa",
    "Marcos",
    "Natália",
    "Otávio",
    "Paula",
    "Rafael",
    "Sofia",
    "Tiago",
    "Valentina",
    "William",
    "Yasmin",
    "Lucas",
    "Beatriz",
    "Mateus",
    "Camila",
    "Pedro",
    "Julia",
    "Miguel",
];

/// Family names for users and cast members.
pub const LAST_NAMES: &[&str] = &[
    "Silva",
    "Santos",
    "Oliveira",
    "Souza",
    "Rodrigues",
    "Ferreira",
    "Alves",
    "Pereira",
    "Lima",
    "Gomes",
    "Costa",
    "Ribeiro",
    "Martins",
    "Carvalho",
    "Almeida",
    "Lopes",
    "Soares",
    "Fernandes",
    "Vieira",
    "Barbosa",
    "Rocha",
    "Dias",
    "Nascimento",
    "Andrade",
];

/// ISO 3166 alpha-2 countries; Brazil appears several times so most users are Brazilian.
pub const COUNTRIES: &[&str] = &[
    "BR", "BR", "BR", "BR", "BR", "BR", "PT", "AR", "US", "MX", "CL", "CO", "UY", "ES",
];

/// BCP 47 languages for preferences.
pub const LANGUAGES: &[&str] = &[
    "pt-BR", "pt-BR", "pt-BR", "en-US", "es-ES", "es-AR", "pt-PT",
];

/// Maturity ratings (Brazil's classification), also used as users' limits.
pub const MATURITY: &[&str] = &["L", "10", "12", "14", "16", "18"];

/// Genres of titles and users' favourites.
pub const GENRES: &[&str] = &[
    "drama",
    "comedy",
    "action",
    "thriller",
    "documentary",
    "sci-fi",
    "romance",
    "horror",
    "animation",
    "crime",
    "fantasy",
    "family",
];

/// Words for title names: "The <adjective> <noun>".
pub const ADJECTIVES: &[&str] = &[
    "Silent", "Last", "Hidden", "Golden", "Broken", "Endless", "Crimson", "Distant", "Frozen",
    "Wild", "Secret", "Electric", "Lost", "Burning", "Midnight", "Northern", "Quiet", "Iron",
];

/// Words for title names.
pub const NOUNS: &[&str] = &[
    "River", "Kingdom", "Signal", "Garden", "Harbor", "Storm", "Horizon", "Promise", "Machine",
    "Carnival", "Frontier", "Echo", "Island", "Letter", "Orchard", "Station", "Tide", "Witness",
];

/// Viewing devices.
pub const DEVICES: &[&str] = &["tv", "tv", "mobile", "mobile", "web", "tablet"];

/// Relations between titles.
pub const RELATIONS: &[&str] = &["similar", "similar", "sequel", "prequel", "same_franchise"];

/// Why a subscriber leaves (`payment_failed` is used for past-due subscriptions).
pub const CANCEL_REASONS: &[&str] = &[
    "too_expensive",
    "not_enough_content",
    "switching_service",
    "technical_issues",
    "other",
];

/// Campaigns for the `banner.campaign` variable.
pub const CAMPAIGNS: &[&str] = &["carnaval-2026", "summer-sale", "oscars-week", "none"];
