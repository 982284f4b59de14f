/* The franka_ros2 stand-in in C on Eclipse Cyclone DDS 0.10 (Debian's cyclonedds-dev, the line ROS 2
 * Humble and Jazzy ship): a FAKE ROBOT, no dynamics.  The same behaviour as tools/franka_ros2_standin.py
 * (integrates the newest commanded joint velocities at RATE Hz, holds the last command as a
 * JointGroupVelocityController does, publishes sensor_msgs/JointState with the arm's joints out of
 * order and the fingers merged in, reflex on SIGUSR1 until SIGUSR2), built on another Cyclone
 * version than the Python one, so the tests prove the two interoperate on ROS 2's wire format.
 *
 * Usage: standin DOMAIN_ID ROBOT_MODEL(fr3|panda) [JOINT_STATES_TOPIC] [CONTROLLER] [RATE_HZ]
 * Cyclone's network settings come from CYCLONEDDS_URI.  Prints {"ready": true} once publishing. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dds/dds.h"
#include "ros2_messages.h"

static volatile sig_atomic_t stop_requested = 0, reflex = 0;
static void on_stop(int sig) { (void)sig; stop_requested = 1; }
static void on_reflex(int sig) { reflex = (sig == SIGUSR1); }

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s DOMAIN_ID fr3|panda [JOINT_STATES_TOPIC] [CONTROLLER] [RATE_HZ]\n", argv[0]);
    return 2;
  }
  const dds_domainid_t domain = (dds_domainid_t)atoi(argv[1]);
  const char *model = argv[2];
  const char *states_topic = argc > 3 ? argv[3] : "/franka/joint_states";
  const char *controller = argc > 4 ? argv[4] : "joint_velocity_controller";
  const double rate = argc > 5 ? atof(argv[5]) : 1000.0;
  static const double home[7] = {0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785};
  static const int order[7] = {3, 0, 6, 1, 5, 2, 4}; /* the arm's joints as the message lists them */
  char arm[7][64], fingers[2][64], topic[256], commands_topic[256];
  for (int i = 0; i < 7; i++) snprintf(arm[i], sizeof arm[i], "%s_joint%d", model, i + 1);
  for (int i = 0; i < 2; i++) snprintf(fingers[i], sizeof fingers[i], "%s_finger_joint%d", model, i + 1);
  snprintf(topic, sizeof topic, "rt/%s", states_topic[0] == '/' ? states_topic + 1 : states_topic);
  snprintf(commands_topic, sizeof commands_topic, "rt/%s/commands", controller);

  dds_entity_t participant = dds_create_participant(domain, NULL, NULL);
  if (participant < 0) {
    fprintf(stderr, "dds_create_participant: %s\n", dds_strretcode(-participant));
    return 1;
  }
  dds_qos_t *writer_qos = dds_create_qos();
  dds_qset_reliability(writer_qos, DDS_RELIABILITY_RELIABLE, DDS_MSECS(100));
  dds_qset_history(writer_qos, DDS_HISTORY_KEEP_LAST, 1);
  dds_qos_t *reader_qos = dds_create_qos();
  dds_qset_reliability(reader_qos, DDS_RELIABILITY_BEST_EFFORT, 0);
  dds_qset_history(reader_qos, DDS_HISTORY_KEEP_LAST, 1);
  dds_entity_t states = dds_create_topic(participant, &sensor_msgs_msg_dds__JointState__desc, topic, NULL, NULL);
  dds_entity_t writer = dds_create_writer(participant, states, writer_qos, NULL);
  dds_entity_t commands =
      dds_create_topic(participant, &std_msgs_msg_dds__Float64MultiArray__desc, commands_topic, NULL, NULL);
  dds_entity_t reader = dds_create_reader(participant, commands, reader_qos, NULL);
  if (states < 0 || writer < 0 || commands < 0 || reader < 0) {
    fprintf(stderr, "cannot create the topics, writer or reader\n");
    return 1;
  }
  signal(SIGTERM, on_stop);
  signal(SIGINT, on_stop);
  signal(SIGUSR1, on_reflex);
  signal(SIGUSR2, on_reflex);

  double q[7], velocity[7] = {0};
  memcpy(q, home, sizeof q);
  char *names[9];
  double positions[9], velocities[9], efforts[9] = {0};
  for (int k = 0; k < 4; k++) names[k] = arm[order[k]];
  names[4] = fingers[0];
  names[5] = fingers[1];
  for (int k = 4; k < 7; k++) names[k + 2] = arm[order[k]];

  std_msgs_msg_dds__Float64MultiArray_ *received = std_msgs_msg_dds__Float64MultiArray___alloc();
  void *samples[1] = {received};
  dds_sample_info_t info[1];
  const double period = 1.0 / rate;
  double last = now_s(), next_tick = last;
  int announced = 0;
  while (!stop_requested) {
    double now = now_s();
    while (dds_take(reader, samples, info, 1, 1) > 0) {
      if (!info[0].valid_data || received->data._length != 7) continue;
      int finite = 1;
      for (int i = 0; i < 7; i++) finite &= isfinite(received->data._buffer[i]);
      if (finite) memcpy(velocity, received->data._buffer, sizeof velocity);
    }
    double dt = now - last;
    last = now;
    if (reflex) memset(velocity, 0, sizeof velocity);
    for (int i = 0; i < 7; i++) q[i] += velocity[i] * dt;
    for (int k = 0; k < 9; k++) {
      int joint = k < 4 ? order[k] : (k >= 6 ? order[k - 2] : -1);
      positions[k] = joint < 0 ? 0.04 : q[joint];
      velocities[k] = joint < 0 ? 0.0 : velocity[joint];
    }
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    sensor_msgs_msg_dds__JointState_ message = {
        .header = {.stamp = {.sec = (int32_t)wall.tv_sec, .nanosec = (uint32_t)wall.tv_nsec}, .frame_id = ""},
        .name = {._length = 9, ._maximum = 9, ._buffer = names, ._release = false},
        .position = {._length = 9, ._maximum = 9, ._buffer = positions, ._release = false},
        .velocity = {._length = 9, ._maximum = 9, ._buffer = velocities, ._release = false},
        .effort = {._length = 9, ._maximum = 9, ._buffer = efforts, ._release = false},
    };
    dds_write(writer, &message);
    if (!announced) {
      printf("{\"ready\": true, \"cyclonedds\": \"%s\"}\n", "0.10");
      fflush(stdout);
      announced = 1;
    }
    next_tick += period;
    double delay = next_tick - now_s();
    if (delay > 0) {
      struct timespec pause = {.tv_sec = (time_t)delay, .tv_nsec = (long)((delay - floor(delay)) * 1e9)};
      nanosleep(&pause, NULL);
    } else {
      next_tick = now_s();
    }
  }
  std_msgs_msg_dds__Float64MultiArray__free(received, DDS_FREE_ALL);
  dds_delete_qos(writer_qos);
  dds_delete_qos(reader_qos);
  dds_delete(participant);
  return 0;
}
