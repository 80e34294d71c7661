#include "backends/c10d/c10d_environment.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <stdexcept>
#include <string>

namespace tspipe {
namespace {

int EnvInt(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr) {
    throw std::invalid_argument(std::string("environment variable ") + name +
                                " is not set (set it like torchrun does, or start the ranks "
                                "with tools/launch)");
  }
  try {
    size_t used = 0;
    int x = std::stoi(v, &used);
    if (used != std::string(v).size()) throw std::invalid_argument(v);
    return x;
  } catch (const std::exception&) {
    throw std::invalid_argument(std::string("environment variable ") + name + "='" + v +
                                "' is not an integer");
  }
}

}  // namespace

C10dOptions C10dOptionsFromEnvironment() {
  C10dOptions o;
  o.rank = EnvInt("RANK");
  o.world_size = EnvInt("WORLD_SIZE");
  o.local_rank = std::getenv("LOCAL_RANK") ? EnvInt("LOCAL_RANK") : o.rank;
  o.master_port = EnvInt("MASTER_PORT");
  if (const char* addr = std::getenv("MASTER_ADDR")) o.master_addr = addr;
  if (o.world_size < 1 || o.rank < 0 || o.rank >= o.world_size) {
    throw std::invalid_argument("RANK=" + std::to_string(o.rank) + " is not in [0, WORLD_SIZE=" +
                                std::to_string(o.world_size) + ")");
  }
  return o;
}

std::string LocalAddressToward(const std::string& master, int port) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(master.c_str(), std::to_string(port).c_str(), &hints, &found) != 0) return "";
  std::string out;
  const int fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (fd >= 0 && connect(fd, found->ai_addr, found->ai_addrlen) == 0) {
    sockaddr_in local{};
    socklen_t len = sizeof(local);
    char text[INET_ADDRSTRLEN] = {};
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0 &&
        inet_ntop(AF_INET, &local.sin_addr, text, sizeof(text)) != nullptr) {
      out = text;
    }
  }
  if (fd >= 0) close(fd);
  freeaddrinfo(found);
  return out;
}

}  // namespace tspipe
