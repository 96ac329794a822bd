/**
 * The three-node RabbitMQ cluster of `bash scripts/topology.sh start rabbitmq-cluster`: its
 * node control (kill, stop, restart, where a quorum queue's leader is) and the cross-process
 * lock that whoever takes a node down holds, shared with the example shop's chaos switch.
 */
export * from '@ballast/testkit/rabbitmq-cluster'
