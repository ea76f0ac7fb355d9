# STAND-IN for nixpkgs' `lib`: only the functions Virtufin's flake and the other stand-ins
# call, written from their documented behaviour.
let
  inherit (builtins)
    attrNames
    concatStringsSep
    elemAt
    filter
    length
    listToAttrs
    replaceStrings
    stringLength
    substring
    ;
  foldr =
    op: nul: list:
    let
      len = length list;
      go = n: if n == len then nul else op (elemAt list n) (go (n + 1));
    in
    go 0;
  hasPrefix = prefix: s: substring 0 (stringLength prefix) s == prefix;
  upper = [ "A" "B" "C" "D" "E" "F" "G" "H" "I" "J" "K" "L" "M" "N" "O" "P" "Q" "R" "S" "T" "U" "V" "W" "X" "Y" "Z" ];
  lower = [ "a" "b" "c" "d" "e" "f" "g" "h" "i" "j" "k" "l" "m" "n" "o" "p" "q" "r" "s" "t" "u" "v" "w" "x" "y" "z" ];
  escapeShellArg = arg: "'" + replaceStrings [ "'" ] [ "'\\''" ] (toString arg) + "'";
  composeExtensions =
    f: g: final: prev:
    let
      fApplied = f final prev;
    in
    fApplied // g final (prev // fApplied);
in
rec {
  inherit foldr hasPrefix escapeShellArg composeExtensions;
  fix =
    f:
    let
      x = f x;
    in
    x;
  extends =
    overlay: f: final:
    let
      prev = f final;
    in
    prev // overlay final prev;
  composeManyExtensions = foldr composeExtensions (final: prev: { });
  genAttrs =
    names: f:
    listToAttrs (
      map (name: {
        inherit name;
        value = f name;
      }) names
    );
  filterAttrs =
    pred: set:
    listToAttrs (
      map (name: {
        inherit name;
        value = set.${name};
      }) (filter (name: pred name set.${name}) (attrNames set))
    );
  mapAttrsToList = f: set: map (name: f name set.${name}) (attrNames set);
  hasSuffix =
    suffix: s:
    let
      ls = stringLength s;
      lx = stringLength suffix;
    in
    lx <= ls && substring (ls - lx) lx s == suffix;
  removePrefix =
    prefix: s: if hasPrefix prefix s then substring (stringLength prefix) (stringLength s) s else s;
  optional = cond: x: if cond then [ x ] else [ ];
  optionals = cond: list: if cond then list else [ ];
  optionalAttrs = cond: set: if cond then set else { };
  optionalString = cond: s: if cond then s else "";
  toLower = replaceStrings upper lower;
  escapeShellArgs = args: concatStringsSep " " (map escapeShellArg args);
}
