-- Familiar forms of given names, for the `nickname` level of scored
-- identity rules (identity_link's `scored`): Bob is Robert, Peggy is
-- Margaret. pgchain ships common English ones; a project adds its own
-- (`insert into pgchain.nicknames values ('jonathan', 'jon') on conflict do
-- nothing`, in a migration of its own). This file only ever adds rows, so a
-- project's rows stay when pgchain upgrades.
create table if not exists pgchain.nicknames (
  name     text not null,  -- a given name, lower case
  nickname text not null,  -- a familiar form of it, lower case
  primary key (name, nickname)
);
create index if not exists nicknames_nickname on pgchain.nicknames (nickname);

insert into pgchain.nicknames (name, nickname)
select x.name, n.nickname
  from (values
    ('abigail', 'abby,gail'), ('albert', 'al,bert,bertie'), ('alexander', 'alex,al,sandy,xander'),
    ('alexandra', 'alex,sandra,sandy,lexi'), ('alfred', 'alf,fred,freddie'), ('amanda', 'mandy,manda'),
    ('amelia', 'millie,amy'), ('andrew', 'andy,drew'), ('angela', 'angie'), ('anthony', 'tony'),
    ('antonia', 'toni'), ('arthur', 'art,artie'), ('barbara', 'barb,babs'), ('benjamin', 'ben,benny,benji'),
    ('bernard', 'bernie'), ('beverly', 'bev'), ('bradley', 'brad'), ('catherine', 'cathy,kate,katie,cat'),
    ('charles', 'charlie,chuck,chas'), ('charlotte', 'lottie,charlie,lotte'), ('christina', 'chris,tina,christy'),
    ('christine', 'chris,tina'), ('christopher', 'chris,kit,topher'), ('clifford', 'cliff'),
    ('cynthia', 'cindy'), ('daniel', 'dan,danny'), ('david', 'dave,davy'), ('deborah', 'deb,debbie'),
    ('dominic', 'dom'), ('donald', 'don,donny'), ('dorothy', 'dot,dottie,dolly'), ('douglas', 'doug'),
    ('edward', 'ed,eddie,ted,ned'), ('eleanor', 'ellie,nell,nora'), ('elizabeth', 'liz,beth,betty,lizzie,eliza,libby,bess'),
    ('emily', 'em,emmy'), ('eugene', 'gene'), ('frances', 'fran,frankie'), ('francis', 'frank,frankie'),
    ('frederick', 'fred,freddie'), ('gabriel', 'gabe'), ('gabrielle', 'gabby'), ('gerald', 'gerry,jerry'),
    ('gregory', 'greg'), ('harold', 'harry,hal'), ('harrison', 'harry'), ('henry', 'harry,hank'),
    ('isabella', 'bella,izzy'), ('jacob', 'jake'), ('james', 'jim,jimmy,jamie'), ('janet', 'jan'),
    ('jeffrey', 'jeff'), ('jennifer', 'jen,jenny'), ('jessica', 'jess,jessie'), ('john', 'jack,johnny'),
    ('jonathan', 'jon,jonny'), ('joseph', 'joe,joey'), ('joshua', 'josh'), ('judith', 'judy'),
    ('katherine', 'kate,kathy,katie,kat'), ('kathleen', 'kathy,kate'), ('kenneth', 'ken,kenny'),
    ('lawrence', 'larry'), ('leonard', 'leo,len,lenny'), ('louise', 'lou'), ('madeleine', 'maddie'),
    ('margaret', 'maggie,peggy,meg,marge,madge'), ('matilda', 'tilly,tilda'), ('matthew', 'matt'),
    ('michael', 'mike,mick,mickey'), ('mitchell', 'mitch'), ('nathan', 'nate'), ('nathaniel', 'nate,nat'),
    ('nicholas', 'nick,nicky'), ('nicola', 'nicky'), ('oliver', 'ollie'), ('pamela', 'pam'),
    ('patricia', 'pat,patty,trish,tricia'), ('patrick', 'pat,paddy'), ('peter', 'pete'),
    ('philip', 'phil'), ('raymond', 'ray'), ('rebecca', 'becky,becca'), ('richard', 'rick,dick,rich,ricky'),
    ('robert', 'bob,rob,bobby,robbie,bert'), ('ronald', 'ron,ronnie'), ('samantha', 'sam,sammy'),
    ('samuel', 'sam,sammy'), ('sarah', 'sally,sadie'), ('stephen', 'steve'), ('steven', 'steve'),
    ('susan', 'sue,susie,suzy'), ('theodore', 'ted,teddy,theo'), ('thomas', 'tom,tommy'),
    ('timothy', 'tim,timmy'), ('valerie', 'val'), ('victoria', 'vicky,tori'), ('vincent', 'vince,vinnie'),
    ('walter', 'walt,wally'), ('william', 'bill,will,billy,willy'), ('zachary', 'zach,zack')
  ) x(name, forms)
 cross join lateral unnest(string_to_array(x.forms, ',')) n(nickname)
on conflict do nothing;

-- True when given names a and b are one name by pgchain.nicknames: equal
-- (case aside), one a familiar form of the other, or both familiar forms
-- of one name (Bob and Robbie). Null when either is null.
create or replace function pgchain.same_given_name(a text, b text) returns boolean
language sql stable strict parallel safe as $$
  select lower(a) = lower(b) or exists (
    select 1 from pgchain.nicknames n
     where (n.name = lower(a) and n.nickname = lower(b))
        or (n.name = lower(b) and n.nickname = lower(a))
        or (n.nickname = lower(a) and exists (
              select 1 from pgchain.nicknames m where m.name = n.name and m.nickname = lower(b))))
$$;
