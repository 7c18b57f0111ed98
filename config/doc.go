// Package config loads the imageiod configuration: every CONF_DIR/conf.d/*.conf
// file, in INI syntax, merged in order of file name so a later file wins
// (50-vdsm.conf < 99-user.conf). Sections, keys and defaults are those of the
// reference daemon, so an existing configuration works unchanged; unknown
// sections and keys are ignored.
package config
