-- The user-handler's store (S2.1): users, their preferences, subscriptions and payments,
-- in the schema `streaming`, plus the ledger of the events already applied.
--
-- Every time column comes from an event's `time`, never from the clock, so replaying the
-- log leaves the rows byte for byte as they were.

CREATE SCHEMA streaming;

CREATE TABLE streaming.users (
    user_id       text        PRIMARY KEY,
    -- Not unique: profile updates of different users are not ordered with respect to each
    -- other, so an address may pass from one user to another and be held by both for a
    -- moment; a unique index would refuse a stream whose final state is consistent.
    email         text        NOT NULL CHECK (email LIKE '_%@_%'),
    display_name  text        NOT NULL CHECK (display_name <> ''),
    country       char(2)     NOT NULL CHECK (country ~ '^[A-Z]{2}$'),
    birth_year    smallint    NOT NULL CHECK (birth_year BETWEEN 1900 AND 2100),
    registered_at timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);
-- Look-ups by address (sign-in, support), case-insensitive.
CREATE INDEX users_email_idx ON streaming.users (lower(email));

CREATE TABLE streaming.user_preferences (
    user_id          text        PRIMARY KEY REFERENCES streaming.users (user_id),
    language         text        NOT NULL CHECK (language ~ '^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$'),
    subtitles        boolean     NOT NULL,
    autoplay         boolean     NOT NULL,
    maturity_limit   text        NOT NULL CHECK (maturity_limit IN ('L', '10', '12', '14', '16', '18')),
    favourite_genres text[]      NOT NULL DEFAULT '{}',
    updated_at       timestamptz NOT NULL
);

CREATE TABLE streaming.subscriptions (
    subscription_id  text          PRIMARY KEY,
    user_id          text          NOT NULL REFERENCES streaming.users (user_id),
    plan             text          NOT NULL CHECK (plan IN ('basic', 'standard', 'premium')),
    price            numeric(12,2) NOT NULL CHECK (price >= 0),
    currency         char(3)       NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    period           text          NOT NULL CHECK (period IN ('monthly')),
    -- pending → active ⇄ past_due, and cancelled (final) from any of them.
    state            text          NOT NULL DEFAULT 'pending'
                                   CHECK (state IN ('pending', 'active', 'past_due', 'cancelled')),
    started_at       timestamptz   NOT NULL,
    -- The first successful payment, which made the subscription active.
    first_payment_id text,
    activated_at     timestamptz,
    cancelled_at     timestamptz,
    cancel_reason    text,
    updated_at       timestamptz   NOT NULL,
    CHECK ((first_payment_id IS NULL) = (activated_at IS NULL)),
    CHECK (state NOT IN ('active', 'past_due') OR first_payment_id IS NOT NULL),
    CHECK ((state = 'cancelled') = (cancelled_at IS NOT NULL)),
    CHECK (cancel_reason IS NULL OR cancelled_at IS NOT NULL)
);
CREATE INDEX subscriptions_user_id_idx ON streaming.subscriptions (user_id);
CREATE INDEX subscriptions_state_idx ON streaming.subscriptions (state);

CREATE TABLE streaming.payments (
    payment_id      text          PRIMARY KEY,
    subscription_id text          NOT NULL REFERENCES streaming.subscriptions (subscription_id),
    user_id         text          NOT NULL REFERENCES streaming.users (user_id),
    status          text          NOT NULL CHECK (status IN ('succeeded', 'failed')),
    amount          numeric(12,2) NOT NULL CHECK (amount >= 0),
    currency        char(3)       NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    method          text          NOT NULL CHECK (method IN ('card', 'pix', 'boleto')),
    failure_reason  text,
    paid_at         timestamptz   NOT NULL,
    CHECK ((status = 'failed') = (failure_reason IS NOT NULL))
);
CREATE INDEX payments_subscription_id_idx ON streaming.payments (subscription_id, paid_at);
CREATE INDEX payments_user_id_idx ON streaming.payments (user_id, paid_at);

-- Added once both tables exist: the two reference each other.
ALTER TABLE streaming.subscriptions
    ADD CONSTRAINT subscriptions_first_payment_fk
    FOREIGN KEY (first_payment_id) REFERENCES streaming.payments (payment_id);

-- The events already applied, keyed as CloudEvents are (an `id` is unique per `source`).
-- A handler inserts the event's row in the transaction that applies it: a replay finds the
-- row and changes nothing.
CREATE TABLE streaming.processed_events (
    source       text        NOT NULL,
    event_id     text        NOT NULL,
    event_type   text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, event_id)
);
