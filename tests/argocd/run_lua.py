"""Run an Argo CD Lua script (health check or action) the way Argo CD does: Lua 5.1, the
resource as the global `obj`, the script's return value as the result.

    python run_lua.py SCRIPT.lua < resource.json > result.json

Used by tests/argocd.rs with lupa's Lua 5.1 runtime (Argo CD embeds gopher-lua, a Lua 5.1).
"""

import json
import sys

from lupa import lua51


def to_lua(lua, value):
    if isinstance(value, dict):
        table = lua.table()
        for key, item in value.items():
            if item is not None:
                table[key] = to_lua(lua, item)
        return table
    if isinstance(value, list):
        table = lua.table()
        for index, item in enumerate(value, start=1):
            table[index] = to_lua(lua, item)
        return table
    return value


def from_lua(value):
    if lua51.lua_type(value) != "table":
        return value
    keys = list(value.keys())
    if keys and all(isinstance(k, int) for k in keys) and sorted(keys) == list(range(1, len(keys) + 1)):
        return [from_lua(value[k]) for k in sorted(keys)]
    return {str(k): from_lua(value[k]) for k in keys}


def main():
    script = open(sys.argv[1], encoding="utf-8").read()
    resource = json.load(sys.stdin)
    lua = lua51.LuaRuntime(unpack_returned_tuples=False)
    lua.globals().obj = to_lua(lua, resource)
    result = lua.execute(script)
    json.dump(from_lua(result), sys.stdout)


if __name__ == "__main__":
    main()
