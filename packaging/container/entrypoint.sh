#!/bin/sh
# The image's entry point: hsflowd.conf from the environment, as the reference image's
# start.sh writes it (the same variables, defaults and lines), then the agent in the
# foreground.  docker { } when dockerd's socket is mounted, else k8s { } when containerd's is.
set -eu

COLLECTOR="${COLLECTOR:-127.0.0.1}"
PORT="${PORT:-6343}"
POLLING="${POLLING:-30}"
SAMPLING="${SAMPLING:-1000}"
NET="${NET:-docker}"
DROPMON="${DROPMON:-disable}"
DEBUG="${DEBUG:-none}"
CONF="${HSFLOWD_CONF:-/etc/hsflowd.conf}"

case "$DEBUG" in
  info) FLAGS='-dd' ;;
  fine) FLAGS='-ddd' ;;
  finer) FLAGS='-dddd' ;;
  finest) FLAGS='-ddddd' ;;
  *) FLAGS='-d' ;;
esac

{
  echo "sflow {"
  echo " sampling=$SAMPLING"
  echo " sampling.bps_ratio=0"
  echo " polling=$POLLING"
  for ip in $COLLECTOR; do
    echo " collector { ip=$ip udpport=$PORT }"
  done
  if [ -e /var/run/docker.sock ]; then
    echo " docker { }"
  elif [ -e /run/containerd/containerd.sock ]; then
    echo " k8s { markTraffic=on eof=on }"
  fi
  if [ "$DROPMON" = "enable" ]; then
    echo " dropmon { limit=50 start=on sw=on hw=off }"
  fi
  case "$NET" in
    docker)
      echo " pcap { dev=docker0 }"
      echo " pcap { dev=docker_gwbridge }" ;;
    ovs)
      echo " ovs { }" ;;
    flannel)
      echo " pcap { dev=cni0 }" ;;
    host)
      echo " tcp { }"
      echo " pcap { speed=1G- }" ;;
    *)
      echo " tcp { }"
      for dev in $(ls /sys/class/net/ | grep "$NET"); do
        echo " pcap { dev=$dev }"
      done ;;
  esac
  echo "}"
} > "$CONF"

echo "Sending sFlow to $COLLECTOR UDP port $PORT"
exec /usr/sbin/hsflowd $FLAGS -f "$CONF"
