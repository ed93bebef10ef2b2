package datapath

//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel -type endpoint -type port_network -type endpoint_ip -type endpoint_mac -type grant_key -type grant_value -type grant_flag -type grant_prefix_key -type grant_prefix_bits -type service_key -type counter -type flow -type drop_event -type reason -type dns_port -type rule_dst_key -type rule_key -type rule_verdict -type rule_action -type fence -type fence_kind -type flow_key -type flow_state -type flow_owner portIngress ../../bpf/port_ingress.c -- -I../../bpf -I/usr/include/$MULTIARCH

// The benchmark floor: one hash lookup. Test-only output.
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel -output-suffix _test oneLookup ../../bpf/bench/one_lookup.c -- -I../../bpf -I/usr/include/$MULTIARCH
