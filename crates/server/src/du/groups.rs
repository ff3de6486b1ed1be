//! Group, device class and subgroup records: the creation times and friendly names the REST
//! API shows for what the fleet computes from twins, and their deletion.

use serde_json::{Value, json};

use super::{DEVICE_CLASS, DeviceUpdate, GROUP, SUBGROUP, ServiceError, subgroup_key};

impl DeviceUpdate {
    /// Groups as (id, created).
    pub async fn groups(&self) -> Result<Vec<(String, String)>, ServiceError> {
        Ok(self.store.entities(GROUP).await?.into_iter().map(|(k, _, c)| (k, c)).collect())
    }

    /// Device class records as (id, friendly name, created).
    pub async fn device_class_records(&self) -> Result<Vec<(String, Option<String>, String)>, ServiceError> {
        Ok(self
            .store
            .entities(DEVICE_CLASS)
            .await?
            .into_iter()
            .map(|(k, body, c)| {
                let name = serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| v.get("friendlyName").and_then(Value::as_str).map(str::to_owned));
                (k, name, c)
            })
            .collect())
    }

    /// Subgroup records as (group, class, created).
    pub async fn subgroup_records(&self) -> Result<Vec<(String, String, String)>, ServiceError> {
        Ok(self
            .store
            .entities(SUBGROUP)
            .await?
            .into_iter()
            .filter_map(|(k, _, c)| {
                let (group, class) = k.split_once('\n')?;
                Some((group.to_owned(), class.to_owned(), c))
            })
            .collect())
    }

    /// Sets a device class's friendly name.
    pub async fn set_device_class_name(&self, id: &str, name: &str) -> Result<bool, ServiceError> {
        Ok(self.store.set_entity_body(DEVICE_CLASS, id, &json!({"friendlyName": name}).to_string()).await?)
    }

    /// Forgets a device class (it comes back while devices report it).
    pub async fn delete_device_class(&self, id: &str) -> Result<bool, ServiceError> {
        Ok(self.store.delete_entity(DEVICE_CLASS, id).await?)
    }

    /// Forgets a group and its deployments (it comes back while devices carry its tag).
    pub async fn delete_group(&self, id: &str) -> Result<bool, ServiceError> {
        for (deployment, _) in self.deployments().await? {
            if deployment.group_id == id {
                self.store.delete_deployment(id, &deployment.deployment_id).await?;
            }
        }
        for (group, class, _) in self.subgroup_records().await? {
            if group == id {
                self.store.delete_entity(SUBGROUP, &subgroup_key(&group, &class)).await?;
            }
        }
        Ok(self.store.delete_entity(GROUP, id).await?)
    }

    /// Forgets a subgroup (it comes back while devices are in it).
    pub async fn delete_subgroup(&self, group: &str, class: &str) -> Result<bool, ServiceError> {
        Ok(self.store.delete_entity(SUBGROUP, &subgroup_key(group, class)).await?)
    }
}
