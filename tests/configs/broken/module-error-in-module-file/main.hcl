module "api" {
  source  = "./modules/api"
  release = "v1"
}
