-- pgchain's own schema. Everything pgchain keeps in the database lives here;
-- a user's procedures live in schemas of their own.
create schema if not exists pgchain;
