# egress-monitor: the UCI configuration /etc/config/egress-monitor rendered to the agent's TOML.
# Sourced by /etc/init.d/egress-monitor after /lib/functions.sh (config_load, config_get,
# config_list_foreach, config_foreach); the tests source a small shim of those instead.
# POSIX sh (busybox ash): no bashisms.
#
#   egress_monitor_render > file    the TOML on stdout; on a bad value, one line on stderr
#                                    naming the section and option, and status 1.

EGRESS_MONITOR_UCI="${EGRESS_MONITOR_UCI:-egress-monitor}"

# Set by the rendering: "1" once a value was rejected; the TOML text so far; the last quoted value.
_em_failed=0
_em_out=""
_em_q=""

_em_error() {
	echo "egress-monitor: /etc/config/$EGRESS_MONITOR_UCI: $*" >&2
	_em_failed=1
}

# One line of output.
_em_line() {
	_em_out="$_em_out$1
"
}

# _em_q becomes a TOML basic string for $2 (section.option named by $1). Control characters
# (newline, tab, ...) are rejected: no configuration value needs them.
_em_str() {
	case "$2" in
	*[[:cntrl:]]*)
		_em_error "$1: control characters (newline, tab, ...) are not allowed"
		_em_q='""'
		return 1
		;;
	esac
	_em_q="\"$(printf '%s' "$2" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')\""
}

# _em_q becomes a TOML integer for $2, or an error.
_em_int() {
	case "$2" in
	'' | *[!0-9]*)
		_em_error "$1: expected a whole number, got \"$2\""
		_em_q=0
		return 1
		;;
	esac
	_em_q="$2"
}

# `key = "value"` for a string option of the main section, when set.
_em_opt_str() {
	local value
	config_get value main "$2"
	[ -n "$value" ] || return 0
	_em_str "main.$2" "$value"
	_em_line "$1 = $_em_q"
}

_em_opt_int() {
	local value
	config_get value main "$2"
	[ -n "$value" ] || return 0
	_em_int "main.$2" "$value"
	_em_line "$1 = $_em_q"
}

# Appends one list item, TOML-quoted, to _em_items.
_em_item() {
	_em_str "$_em_list_name" "$1"
	_em_items="${_em_items:+$_em_items, }$_em_q"
}

# `key = [...]` for a list option of the main section, when it has items.
_em_opt_list() {
	_em_items=""
	_em_list_name="main.$2"
	config_list_foreach main "$2" _em_item
	[ -n "$_em_items" ] || return 0
	_em_line "$1 = [$_em_items]"
}

_em_leases() {
	local section="$1" format path
	config_get format "$section" format
	config_get path "$section" path
	if [ -z "$format" ] || [ -z "$path" ]; then
		_em_error "leases section $section: options format and path are required"
		return 0
	fi
	_em_line ""
	_em_line "[[leases]]"
	_em_str "$section.format" "$format"
	_em_line "format = $_em_q"
	_em_str "$section.path" "$path"
	_em_line "path = $_em_q"
}

_em_device() {
	local section="$1" mac name group line
	config_get mac "$section" mac
	config_get name "$section" name
	config_get group "$section" group
	if [ -z "$mac" ] || [ -z "$name" ]; then
		_em_error "device section $section: options mac and name are required"
		return 0
	fi
	_em_str "$section.mac" "$mac"
	line="$_em_q = { name = "
	_em_str "$section.name" "$name"
	line="$line$_em_q"
	if [ -n "$group" ]; then
		_em_str "$section.group" "$group"
		line="$line, group = $_em_q"
	fi
	_em_devices="$_em_devices$line }
"
}

# The TOML text of the whole configuration on stdout; status 1, and nothing on stdout, if any
# value was rejected. Values that pass here but are still wrong (an unknown lease format, a bad
# duration) are the agent's to reject, naming the key: `egress-monitor --config FILE --check-config`.
egress_monitor_render() {
	local include
	_em_failed=0
	_em_out=""
	_em_devices=""
	config_load "$EGRESS_MONITOR_UCI" || {
		_em_error "cannot be read"
		return 1
	}
	_em_line "# Rendered from /etc/config/$EGRESS_MONITOR_UCI by /etc/init.d/egress-monitor: edit that file."
	_em_opt_list lan lan
	_em_opt_str listen listen
	_em_opt_str poll_interval poll_interval
	_em_opt_list local_prefixes local_prefix
	_em_opt_int flow_map_entries flow_map_entries
	_em_opt_int device_map_entries device_map_entries
	_em_opt_int max_destinations_per_device max_destinations_per_device
	_em_opt_str attach attach
	_em_opt_str destination_label destination_label
	_em_opt_int sniff_ring_bytes sniff_ring_bytes
	_em_opt_str state_dir state_dir
	config_foreach _em_leases leases
	config_foreach _em_device device
	if [ -n "$_em_devices" ]; then
		_em_line ""
		_em_line "[devices]"
		_em_out="$_em_out$_em_devices"
	fi
	config_get include main include
	if [ -n "$include" ] && [ ! -f "$include" ]; then
		_em_error "main.include: $include is not a file"
	fi
	[ "$_em_failed" = 0 ] || return 1
	printf '%s' "$_em_out"
	if [ -n "$include" ]; then
		printf '\n# Appended from %s\n' "$include"
		cat "$include" || return 1
	fi
	return 0
}
