# Parse versions.env: `KEY=VALUE` lines, `#` comment lines, optional matching quotes around a
# value; the same rules as `virtufin.config.parse_versions` (a test holds the two in step).
# Returns an attrset KEY -> VALUE; a malformed line, a repeated key, an empty value or a value
# that looks like shell expansion is an evaluation error naming the line.
text:
let
  inherit (builtins)
    elemAt
    filter
    foldl'
    hasAttr
    isString
    match
    split
    stringLength
    substring
    ;
  trim =
    s:
    let
      m = match "[[:space:]]*(.*[^[:space:]])[[:space:]]*" s;
    in
    if m == null then "" else elemAt m 0;
  unquote =
    v:
    let
      n = stringLength v;
      first = substring 0 1 v;
    in
    if n >= 2 && first == substring (n - 1) 1 v && (first == "\"" || first == "'") then
      substring 1 (n - 2) v
    else
      v;
  lines = filter isString (split "\n" text);
  numbered = builtins.genList (i: {
    number = i + 1;
    line = trim (elemAt lines i);
  }) (builtins.length lines);
  wanted = filter (l: l.line != "" && substring 0 1 l.line != "#") numbered;
  parse =
    l:
    let
      m = match "([^=]*)=(.*)" l.line;
      key = trim (elemAt m 0);
      value = unquote (trim (elemAt m 1));
      where = "versions.env line ${toString l.number}";
    in
    if m == null then
      throw "${where}: expected KEY=VALUE"
    else if match "[A-Z][A-Z0-9_]*" key == null then
      throw "${where} (${key}): keys are upper-case letters, digits, _"
    else if value == "" then
      throw "${where} (${key}): has no value"
    else if match ".*[$`].*" value != null then
      throw "${where} (${key}): shell expansion is not supported"
    else
      { inherit key value where; };
  add =
    acc: entry:
    if hasAttr entry.key acc then
      throw "${entry.where} (${entry.key}): is set twice"
    else
      acc // { ${entry.key} = entry.value; };
in
foldl' add { } (map parse wanted)
