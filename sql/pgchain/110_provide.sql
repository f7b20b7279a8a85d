-- A step that makes a row others may wait for calls this with the awaited
-- key (the DETAIL its dependants raise with PGW01). At commit pgchain
-- re-drives the events parked on that key, in order.
create or replace function pgchain.provide(p_key text) returns void
language plpgsql as $$
begin
  if exists (select 1 from pgchain.dead_letters where awaits = p_key and status = 'parked') then
    perform pg_notify('pgchain_provide', p_key);
  end if;
end $$;
