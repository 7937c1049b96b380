# config-lib.sh (content pack drover-default): what config-push,
# config-verify and config-cleanup share. Included with
#   {{ "{{" }} template "config-lib.sh" . {{ "}}" }}
# Values from params are quoted for sh when rendered; nothing here is
# evaluated by the shell that a param could inject.
set -eu

root={{ shellQuote (param "config/root") }}
manifest="$root/.drover-manifest"

drover_fail() {
	echo "error: $*" >&2
	exit 1
}

case "$root" in
/*[!/]*) ;;
*) drover_fail "param config/root must be an absolute directory other than /, got '$root'" ;;
esac

# drover_expected DIR: write the files this node should have under $root
# into DIR, rendered from its params. Add a managed file here and
# config-push writes it, config-verify checks it, config-cleanup removes it.
drover_expected() {
	{
		echo '# Managed by drover (content pack drover-default); local changes are undone by upgrade.'
		printf '%s\n' {{ shellQuote (printf "DROVER_MACHINE=%s" (shellQuote .Machine.Name)) }}
		printf '%s\n' {{ shellQuote (printf "DROVER_ROLE=%s" (shellQuote (param "role"))) }}
{{- if hasParam "storage/mountpoint" }}
		printf '%s\n' {{ shellQuote (printf "DROVER_STORAGE_MOUNTPOINT=%s" (shellQuote (param "storage/mountpoint"))) }}
{{- end }}
	} >"$1/node.env"
	printf '%s\n' {{ shellQuote (param "role") }} >"$1/role"
}

# drover_manifest_files: the files the manifest lists, one a line.
drover_manifest_files() {
	sed -n 's/^file //p' "$manifest"
}

# drover_check_name NAME: refuse a manifest entry that is not a plain file
# name under $root (the manifest is a file on the node; do not trust it to
# name other paths).
drover_check_name() {
	case "$1" in
	'' | .* | */*) drover_fail "$manifest lists '$1', which is not a file drover writes; fix or remove the manifest" ;;
	esac
}

# drover_listed NAME LIST: whether LIST (one name a line) holds NAME.
drover_listed() {
	printf '%s\n' "$2" | grep -qxF -- "$1"
}
