/* A TCP forwarder on loopback for partition tests: it accepts on one port
 * and relays each connection, both ways, to a target port. Blackholing it
 * stops the relaying without closing anything: bytes pile up unread and
 * new connections are accepted but never relayed, so each side notices
 * only through its own timeouts, as with a network that drops packets.
 * One thread per proxy; every call is from the test's thread. */
#ifndef KEEL_TEST_TCPPROXY_H
#define KEEL_TEST_TCPPROXY_H

typedef struct tu_proxy tu_proxy;

/* Listens on 127.0.0.1:listen_port (0: a port the kernel picks) and
 * relays to 127.0.0.1:target_port. Returns NULL on failure (message on
 * stderr). */
tu_proxy *tu_proxy_start(int listen_port, int target_port);
/* The port it listens on. */
int tu_proxy_port(const tu_proxy *p);
/* on != 0: stop relaying (blackhole); 0: relay again (what was held back
 * is relayed then). Takes effect before it returns. */
void tu_proxy_blackhole(tu_proxy *p, int on);
/* Connections accepted so far. */
int tu_proxy_accepted(tu_proxy *p);
/* Closes every connection and the listener, and frees p (NULL is fine). */
void tu_proxy_stop(tu_proxy *p);

#endif
