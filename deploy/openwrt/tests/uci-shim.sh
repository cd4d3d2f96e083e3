# A minimal stand-in for OpenWrt's /lib/functions.sh, for testing egress-monitor-render.sh on a
# host without OpenWrt: config_load sources $UCI_CONFIG_DIR/<name> as shell, as OpenWrt's does
# with the output of `uci export` (so fixtures are written as `uci export` writes: values in
# single quotes). Anonymous sections are named cfg1, cfg2, ... in order (OpenWrt: cfg0XXXXX).
# POSIX sh.

_shim_sections=""
_shim_n=0
_shim_section=""
_shim_lists="${_shim_lists:-}"

config() {
	_shim_n=$((_shim_n + 1))
	_shim_section="${2:-cfg$_shim_n}"
	_shim_sections="$_shim_sections $_shim_section"
	eval "CONFIG_${_shim_section}_TYPE=\$1"
}

option() {
	eval "CONFIG_${_shim_section}_$1=\$2"
}

list() {
	local n
	_shim_lists="$_shim_lists ${_shim_section}_$1"
	eval "n=\${CONFIG_${_shim_section}_$1_LENGTH:-0}"
	n=$((n + 1))
	eval "CONFIG_${_shim_section}_$1_ITEM$n=\$2"
	eval "CONFIG_${_shim_section}_$1_LENGTH=$n"
}

package() { :; }

# Forgets what an earlier config_load read, as OpenWrt's does (lists would grow otherwise).
config_load() {
	local file="${UCI_CONFIG_DIR:-/etc/config}/$1" var
	for var in $_shim_lists; do
		eval "CONFIG_${var}_LENGTH="
	done
	_shim_lists=""
	_shim_sections=""
	_shim_n=0
	[ -f "$file" ] || return 1
	. "$file"
}

# config_get VAR SECTION OPTION [DEFAULT]
config_get() {
	eval "$1=\${CONFIG_$2_$3:-\$4}"
}

# config_list_foreach SECTION OPTION FUNCTION [ARGS...]
config_list_foreach() {
	local section="$1" option="$2" fn="$3" n i=1 item
	shift 3
	eval "n=\${CONFIG_${section}_${option}_LENGTH:-0}"
	while [ "$i" -le "$n" ]; do
		eval "item=\$CONFIG_${section}_${option}_ITEM$i"
		"$fn" "$item" "$@"
		i=$((i + 1))
	done
}

# config_foreach FUNCTION TYPE [ARGS...]
config_foreach() {
	local fn="$1" type="$2" section t
	shift 2
	for section in $_shim_sections; do
		eval "t=\$CONFIG_${section}_TYPE"
		[ "$t" = "$type" ] && "$fn" "$section" "$@"
	done
	return 0
}
