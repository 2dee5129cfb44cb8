package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

var possibleExtensions = []string{".json", ".jsonc", ".yaml", ".yml"}

var getConfigFrames = []string{
	frame("toolkit/job.py", 11, "get_job", "config = get_config(config_path, name)"),
}

// getConfig is toolkit/config.py get_config + preprocess_config.
func getConfig(path string, name *string) (*omap, error) {
	fr := append([]string{}, getConfigFrames...)
	configPath := filepath.Join(toolkitRoot(), "config", path)
	if filepath.IsAbs(path) {
		configPath = path
	}
	real := ""
	if _, err := os.Stat(configPath); err != nil {
		for _, ext := range possibleExtensions {
			if _, err := os.Stat(configPath + ext); err == nil {
				real = configPath + ext
				break
			}
		}
	}
	if real == "" {
		if _, err := os.Stat(path); err == nil {
			real = path
		}
	}
	if real == "" {
		return nil, pyErr("ValueError", "Could not find config file "+path, append(fr, frame("toolkit/config.py", 101, "get_config", `raise ValueError(f"Could not find config file {config_file_path}")`))...)
	}
	data, err := os.ReadFile(real)
	if err != nil {
		return nil, pyErr("PermissionError", fmt.Sprintf("[Errno 13] Permission denied: '%s'", real), fr...)
	}
	content, err := replaceEnvVars(string(data))
	if err != nil {
		pe := err.(*pyException)
		pe.frames = append(fr, frame("toolkit/config.py", 105, "get_config", "content_with_env_replaced = replace_env_vars_in_string(content)"),
			frame("toolkit/config.py", 34, "replace_env_vars_in_string", `return re.sub(r'\$\{([^}]+)\}', replacer, s)`),
			frame("toolkit/config.py", 29, "replacer", `raise ValueError(f"Environment variable {var_name} not set. Please ensure it's defined before proceeding.")`))
		return nil, pe
	}
	var v any
	switch {
	case strings.HasSuffix(real, ".json") || strings.HasSuffix(real, ".jsonc"):
		v, err = parseJSONOrdered([]byte(content))
		if err != nil {
			return nil, pyErr("json.decoder.JSONDecodeError", err.Error(), fr...)
		}
	case strings.HasSuffix(real, ".yaml") || strings.HasSuffix(real, ".yml"):
		v, err = parseYAMLOrdered([]byte(content))
		if err != nil {
			return nil, pyErr("yaml.scanner.ScannerError", err.Error(), fr...)
		}
	default:
		return nil, pyErr("ValueError", fmt.Sprintf("Config file %s must be a json or yaml file", path), fr...)
	}
	cfg, ok := v.(*omap)
	if !ok {
		return nil, pyErr("TypeError", "argument of type 'NoneType' is not iterable", fr...)
	}
	fr = append(fr, frame("toolkit/config.py", 112, "get_config", "return preprocess_config(config, name)"))
	if !cfg.has("job") {
		return nil, pyErr("ValueError", "config file must have a job key", fr...)
	}
	if !cfg.has("config") {
		return nil, pyErr("ValueError", "config file must have a config section", fr...)
	}
	c := cfg.sub("config")
	if !c.has("name") && name == nil {
		return nil, pyErr("ValueError", "config file must have a config.name key", fr...)
	}
	n := ""
	if name != nil {
		n = *name
	} else {
		n = pyStr(c.vals["name"])
	}
	return replaceTag(cfg, "[name]", n).(*omap), nil
}
