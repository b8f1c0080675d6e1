# scripts/ports.sh - sourced by pg.sh, demo.sh and bench/lib.sh: free_port
# prints a free 127.0.0.1 TCP port below the kernel's ephemeral range.
#
# Below that range because a server restarted on its old port must not find
# it taken by some client's outgoing connection (while the database is down,
# silos reconnect many times, each from a fresh ephemeral port; one of them
# landed on the server's port once and the restart failed). The demo restarts
# silos on their ports too.
port_base() {
  local lo
  lo=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  if [ "${lo:-0}" -gt 12000 ]; then echo $(( lo - 11000 )); else echo 30000; fi
}

free_port() {
  local p base
  base=$(port_base)
  for _ in $(seq 1 50); do
    p=$(( (RANDOM % 10000) + base ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  return 1
}
